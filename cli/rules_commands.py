"""Commands of rule evolution and replay: rules (list, test, propose, shadow, approve,
promote), verdict, forget, replay, export."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import msgspec

import selfheal
from selfheal.cli import exits
from selfheal.cli.inputs import AFile, TIME_HELP, optional_time, resolve_incident, resolve_ruleset
from selfheal.cli.loop_commands import as_of_option, json_option, log_argument
from selfheal.cli.output import as_of as _as_of, emit_json, to_json
from selfheal.eventstore.store import is_server
from selfheal.handlers.loop import InputError
from selfheal.schemas.config import ConfigError
from selfheal.handlers.observer import format_diagnosis


@click.group()
def rules() -> None:
    """The observer's rules: what is active, and how a new version gets there."""


@rules.command("list")
@as_of_option
@json_option
@click.pass_obj
def rules_list(ctx, as_of, as_json) -> None:
    """The active version of every rule, and the history of rule sets."""
    if is_server(ctx.db_path) or Path(ctx.db_path).exists():
        listing = selfheal.rules_list(as_of=_as_of(as_of), **ctx.db)
    else:  # no log yet: its rules are the built-in ones, listed without creating a log file here
        with tempfile.TemporaryDirectory(prefix="selfheal-rules-") as scratch:
            listing = selfheal.rules_list(as_of=_as_of(as_of), db=Path(scratch) / "none.db")
    if as_json:
        emit_json(msgspec.to_builtins(listing))  # plain dicts: keys in the deterministic (sorted) order
        return
    active = listing.active
    click.echo(f"active: {active.ruleset_id} ({active.version}), {len(active.rules)} rules")
    for r in active.rules:
        click.echo(f"  {r.id:<44} v{r.version}  {r.kind}")
    for s in listing.history:
        click.echo(f"{s.ruleset_id[:19]}  {s.version:<16} {s.state:<16} {len(s.reports)} reports  {s.source}")


@rules.command("test")
@click.argument("rules_file", type=AFile())
@click.argument("log_file")
@json_option
def rules_test(rules_file, log_file, as_json) -> None:
    """What RULES_FILE finds in LOG_FILE (the log store is not touched)."""
    try:
        diagnosis = selfheal.rules_test(rules_file, log_argument(log_file))
    except OSError as exc:  # name the file that could not be read: the rules or the log
        raise InputError.unreadable(rules_file if exc.filename == rules_file else log_file, exc) from None
    emit_json(diagnosis) if as_json else click.echo(format_diagnosis(diagnosis))
    if diagnosis.primary is not None:
        sys.exit(exits.FAILURE_FOUND)


@rules.command("propose")
@click.argument("rules_file", type=AFile())
@json_option
@click.pass_obj
def rules_propose(ctx, rules_file, as_json) -> None:
    """Record RULES_FILE as a candidate rule set."""
    proposed = selfheal.rules_propose(rules_file, **ctx.db)
    if as_json:
        emit_json({"ruleset_id": proposed.ruleset_id, "version": proposed.version, "source": proposed.source})
    else:
        click.echo(f"proposed {proposed.ruleset_id} ({proposed.version})")


@rules.command("shadow")
@click.argument("candidate")
@json_option
@click.pass_obj
def rules_shadow(ctx, candidate, as_json) -> None:
    """Replay every captured incident through CANDIDATE and the active rules; record the report."""
    candidate = resolve_ruleset(candidate, ctx.db)  # none, or several: a usage error
    report = selfheal.rules_shadow(candidate, config=ctx.config_path, **ctx.db)
    if as_json:
        emit_json(report)
        return
    pr = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    click.echo(f"{report.incidents} incidents: {report.agreements} agree, {len(report.disagreements)} differ; "
               f"precision {pr(report.precision)}, recall {pr(report.recall)} over {report.labelled} verdicts; "
               f"report {report.report_hash}")
    for d in report.disagreements:
        click.echo(f"  {d['incident_id'][:8]}: active {d['active'] or 'none'} | candidate {d['candidate'] or 'none'}")


@rules.command("approve")
@click.argument("candidate")
@click.option("--by", required=True, help="Who decides (recorded).")
@click.option("--note", default="", help="Why (recorded).")
@click.pass_obj
def rules_approve(ctx, candidate, by, note) -> None:
    """Approve CANDIDATE's latest shadow report (needed to promote in prod mode)."""
    candidate = resolve_ruleset(candidate, ctx.db)
    approved = selfheal.rules_approve(candidate, by=by, note=note, **ctx.db)
    click.echo(f"approved report {approved.report_hash} of {approved.ruleset_id} by {by}")


@rules.command("promote")
@click.argument("candidate")
@click.option("--by", required=True, help="Who decides (recorded).")
@click.pass_obj
def rules_promote(ctx, candidate, by) -> None:
    """Make CANDIDATE the active rule set (needs a shadow report; in prod, its approval)."""
    candidate = resolve_ruleset(candidate, ctx.db)
    activated = selfheal.rules_promote(candidate, by=by, config=ctx.config_path, **ctx.db)
    click.echo(f"active rules: {activated.ruleset_id} ({activated.version}), by {by}")


@click.command()
@click.argument("incident_id")
@click.option("--kind", required=True, help="A finding kind, or none.")
@click.option("--by", required=True, help="Who judges (recorded).")
@click.option("--note", default="", help="Why (recorded).")
@click.pass_obj
def verdict(ctx, incident_id, kind, by, note) -> None:
    """Record a person's judgement of an incident (the labelled corpus for rules)."""
    incident_id = resolve_incident(incident_id, ctx.db)  # none, or several: a usage error
    try:
        recorded = selfheal.verdict(incident_id, kind=kind, by=by, note=note, **ctx.db)
    except ValueError as exc:  # a kind no rule can name, or no one named: usage (exit 2), as the table says
        for option in ("--kind", "--by"):
            if str(exc).startswith(option):
                raise click.BadParameter(str(exc).removeprefix(option).lstrip(": "), param_hint=option) from None
        raise
    click.echo(f"incident {recorded.incident_id}: {recorded.kind} (by {by})")


@click.command()
@click.option("--since", help=f"Incidents that occurred at or after this time ({TIME_HELP}).")
@click.option("--until", help="Incidents that occurred before this time (as --since).")
@click.option("--rules", "candidate", help="Replay through this proposed rule set instead of the active rules.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="What if: e.g. rate_limit.runs=5.")
@click.option("--mode", type=click.Choice(["dev", "prod", "disabled"]), help="What if: the loop in this mode.")
@click.option("--bundle", type=AFile(), help="Replay an exported bundle instead.")
@json_option
@click.pass_obj
def replay(ctx, since, until, candidate, assignments, mode, bundle, as_json) -> None:
    """Replay captured incidents through the loop in a scratch store; report what differs."""
    candidate = candidate and resolve_ruleset(candidate, ctx.db, "--rules")
    try:
        report = selfheal.replay(since=optional_time(since, "--since"), until=optional_time(until, "--until"),
                                 rules=candidate, overrides=assignments, mode=mode, bundle=bundle,
                                 config=ctx.config_path, **ctx.db)
    except ConfigError as exc:  # a what-if that names no setting, or a bad value for one: usage
        if not str(exc).startswith("--set"):
            raise
        raise click.BadParameter(str(exc).removeprefix("--set").lstrip(": "), param_hint="--set") from None
    if as_json:
        emit_json(report)
        return
    click.echo(f"replayed {report.incidents} incidents; {report.differing} decided differently; "
               f"canaries answered: {to_json(report.canary_answers)}")
    if report.forgotten:
        click.echo(f"not replayed, their text forgotten: {', '.join(i[:8] for i in report.forgotten)}")
    for r in report.results:
        mark = "DIFFERS" if r.differs else "same   "
        click.echo(f"{mark} {r.occurred_at}  {r.incident_id[:8]}  {r.deployment}: "
                   f"{_in_words('outcome', r.replayed['outcome'])}")
        for key in r.differs:
            click.echo(f"          {key}: {_in_words(key, r.original[key])}  ->  {_in_words(key, r.replayed[key])}")


def _in_words(key: str, value) -> str:
    """One field of a replay's decisions (handlers/replay.py `decisions`) as the text report
    has always spelled it."""
    if value is None or value == []:
        return "nothing"
    if key == "observation":
        return "no finding" if value["kind"] is None else f"{value['kind']} ({value['rule']} v{value['rule_version']})"
    if key == "intent":
        return f"tune {value['seed_fix']}" if value["action"] == "tune" else value["action"]
    if key == "gate":  # a refusal's reason: the rules that refused it
        return value["decision"] + (f": {', '.join(value['reason'])}" if "reason" in value else "")
    if key == "outcome":
        if value["outcome"] == "promoted":
            # in the configuration's field order, as the log spells it (to_json sorts the keys)
            return f"promoted {msgspec.json.encode(value['config']).decode()}"
        return value["outcome"] + (f": {value['reason']}" if "reason" in value else "")
    return to_json(value)


@click.command()
@click.argument("incident_id")
@click.option("-o", "--output", type=AFile(), help="Write the bundle here (default: stdout).")
@click.pass_obj
def export(ctx, incident_id, output) -> None:
    """Write an incident and its whole chain as a portable bundle (JSON Lines)."""
    lines = selfheal.export(incident_id, output=output, config=ctx.config_path, **ctx.db)
    if output:
        click.echo(f"{len(lines) - 1} events written to {output}")
    else:
        click.echo("\n".join(lines) + "\n", nl=False)


@click.command()
@click.argument("incident_id")
@click.option("--by", required=True, help="Who forgets it (recorded).")
@click.option("--reason", default="", help="Why (recorded): e.g. which secret leaked.")
@json_option
@click.pass_obj
def forget(ctx, incident_id, by, reason, as_json) -> None:
    """Make INCIDENT_ID's text unreadable for good (its key is destroyed; the log still verifies)."""
    recorded = selfheal.forget(incident_id, by=by, reason=reason, **ctx.db)
    if as_json:
        emit_json(recorded)
    else:
        click.echo(f"incident {recorded.incident_id}: text forgotten (by {recorded.by})")


def register(group: click.Group) -> None:
    for command in (rules, verdict, forget, replay, export):
        group.add_command(command)
