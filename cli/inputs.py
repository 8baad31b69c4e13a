"""What a person types, read one way in every command: times, positions, ids and names.

Times: ISO-8601, and a time without a zone is UTC (never the machine's zone: a time copied
from one machine's output must mean the same instant on another); also `now`, `today`,
`yesterday` (midnight UTC) and relative times such as `-2h`, `-30m`, `-7d`. A bad value is a
usage error naming the option. Names (event types, deployments) and ids that name nothing
are usage errors that list what exists, never an empty answer."""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import click

import selfheal
from selfheal.schemas.events import EVENT_TYPES

TIME_HELP = "ISO-8601 (UTC when it has no zone), now, today, yesterday, or relative: -2h, -30m, -7d"
MAX_POSITION = 2**63 - 1  # SQLite's INTEGER: a larger position cannot exist
_RELATIVE = re.compile(r"^([+-])\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: str, option: str, now: datetime | None = None) -> datetime:
    """An aware UTC datetime for what was typed after `option` (see the module docstring)."""
    text = value.strip()
    low = text.lower()
    now = now or now_utc()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if low in ("now", "today", "yesterday"):
        return {"now": now, "today": midnight, "yesterday": midnight - timedelta(days=1)}[low]
    if match := _RELATIVE.match(low):
        sign, amount, unit = match.groups()
        try:
            delta = timedelta(seconds=float(amount) * _UNITS[unit])
            return now + delta if sign == "+" else now - delta
        except OverflowError:
            raise click.BadParameter(f"{value!r} is too far from now", param_hint=option) from None
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" and text else text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a time: give {TIME_HELP}", param_hint=option) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


class AFile(click.Path):
    """A file argument or option: a folder where a file is expected is exit 1, as for every file
    that cannot be used (click's Path(dir_okay=False) made it a usage error, exit 2, while a
    folder given as a log was exit 1)."""

    def __init__(self, **kwargs):
        super().__init__(dir_okay=True, **kwargs)

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        if value != "-" and os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        return path


class Count(click.ParamType):
    """A position or a number of events: a whole number from 0 (click's IntRange said
    "'x' is not a valid integer range" and showed 2**63 - 1 in the help; SQLite's INTEGER
    cannot hold more)."""

    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if not text.isdigit():
            self.fail(f"{value!r} is not a whole number (0 or more)", param, ctx)
        if int(text) > MAX_POSITION:  # an OverflowError in SQLite otherwise
            self.fail(f"{text}: no log holds a position that large", param, ctx)
        return int(text)


def optional_time(value: str | None, option: str) -> datetime | None:
    return None if value is None else parse_time(value, option)


def position_or_time(value: str | None, option: str = "--as-of") -> int | datetime | None:
    """`--as-of`: a position (digits) or a time."""
    if value is None:
        return None
    if value.strip().isdigit():
        position = int(value)
        if position > MAX_POSITION:
            raise click.BadParameter(f"{value}: no log holds a position that large", param_hint=option)
        return position
    return parse_time(value, option)


def unknown(what: str, given: str, known: Iterable[str], option: str) -> click.BadParameter:
    """The error for a name that names nothing: it lists what exists."""
    names = sorted(set(known))
    listed = ", ".join(names) if names else "none yet"
    return click.BadParameter(f"no {what} {given!r}; known: {listed}", param_hint=option)


def check_types(types: Iterable[str]) -> tuple[str, ...]:
    """Event type names, checked against the log's vocabulary."""
    for name in types:
        if name not in EVENT_TYPES:
            raise unknown("event type", name, EVENT_TYPES, "--type")
    return tuple(types)


def resolve_prefix(what: str, given: str, candidates: Iterable[str], option: str) -> str:
    """The one candidate `given` names, exactly or as a prefix (the rule `show` has for run
    ids); for a stream, the id after its `kind-` counts too (`--stream 2f4d97d5`)."""
    candidates = set(candidates)
    if given in candidates:
        return given
    matches = sorted(c for c in candidates if c.startswith(given)
                     or (what == "stream" and c.partition("-")[2].startswith(given)))
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise click.BadParameter(f"{given!r}: {len(matches)} {what}s match ({shown}); give more of the id",
                                 param_hint=option)
    raise click.BadParameter(f"no {what} {given!r} in the log", param_hint=option)


def resolve_incident(given: str, db: dict, option: str = "INCIDENT_ID") -> str:
    """The full id of the captured incident `given` names, exactly or as a prefix."""
    ids = {row.stream.partition("-")[2] for row in selfheal.events(types=["IncidentCaptured"], **db)}
    return resolve_prefix("incident", given, ids, option)


def waiting_promotion(given: str, db: dict, verb: str, option: str = "PROMOTION_ID") -> str:
    """The full id of the promotion `given` names, exactly or as a prefix, if it still waits
    for a decision (a settled one is an error that says so in words, not `already not committed`)."""
    found = {p.promotion_id: p.status for p in selfheal.promotions(all=True, **db)}
    promotion_id = resolve_prefix("promotion", given, found, option)
    if found[promotion_id] != "waiting":
        raise ValueError(f"promotion {promotion_id}: nothing to {verb}, it no longer waits for a decision "
                         f"(status: {found[promotion_id]})")
    return promotion_id


def check_deployment_name(settings, name: str | None, option: str = "--deployment") -> None:
    """A deployment asked for by name must be configured (a usage error listing those that
    are); with none configured at all, the API's own error says how to configure one."""
    if name is not None and settings.deployments and name not in settings.deployments:
        raise unknown("deployment", name, settings.deployments, option)


def resolve_ruleset(given: str, db: dict, option: str = "CANDIDATE") -> str:
    """The full id of the proposed rule set `given` names: the id, a prefix of it, or of the
    digest after its `sha256:`."""
    ids = {s.ruleset_id for s in selfheal.rules_list(**db).history}
    if not any(i.startswith(given) for i in ids) and any(i.startswith("sha256:" + given) for i in ids):
        given = "sha256:" + given
    return resolve_prefix("rule set", given, ids, option)
