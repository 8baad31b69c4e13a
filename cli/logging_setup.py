"""selfheal's own log lines, configured once for every command (`--log-format`, `--log-level`).

Before this, nothing configured logging: a warning left through Python's last-resort handler
as bare text with no time or level, and journald filed it as info. Now every line goes to
standard error (standard output stays the commands' output) in one of two forms:

- `text`: `2025-01-02T03:04:05.678Z WARNING selfheal.edges.journal: message [deployment=chat]`.
  Under systemd (stderr is the journal stream named by $JOURNAL_STREAM) each line starts with
  its syslog priority, `<4>` for a warning, so journald files it at its level.
- `json`: one object a line, with `time` (UTC, ISO 8601), `level`, `logger`, `message`, and
  `deployment`, `run_id`, `incident_id` (null when the line is about none), plus `error`
  with the traceback when there is one. Callers give the ids as `extra={"deployment": ...}`.

Defaults come from $SELFHEAL_LOG_FORMAT and $SELFHEAL_LOG_LEVEL (else text, warning).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import NoReturn

import click

from selfheal.cli import exits

FORMAT_ENV = "SELFHEAL_LOG_FORMAT"
LEVEL_ENV = "SELFHEAL_LOG_LEVEL"
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
#: the ids a line may be about, in the order text lines show them
IDS = ("deployment", "run_id", "incident_id")
#: syslog priorities (sd-daemon(3)) journald reads from a `<N>` prefix
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _utc(record), "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        line.update({key: getattr(record, key, None) for key in IDS})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, journald: bool = False):
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{key}={getattr(record, key)}" for key in IDS if getattr(record, key, None))
        text = f"{_utc(record)} {record.levelname} {record.name}: {record.getMessage()}"
        text += f" [{ids}]" if ids else ""
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.journald:  # every line of it, so a traceback is not filed as info
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
            text = "\n".join(prefix + line for line in text.split("\n"))
        return text


def _stderr_is_journal() -> bool:
    """Whether standard error is the journal stream systemd gave this service ($JOURNAL_STREAM
    is `device:inode` of it; a child with stderr redirected elsewhere does not match)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class _Handler(logging.StreamHandler):
    """The one handler selfheal installs; found again by its type when configured anew."""


def configure(log_format: str | None = None, level: str | None = None) -> logging.Handler:
    """Send the `selfheal` loggers' lines to standard error in `log_format` at `level` and up.

    Idempotent: configuring again replaces selfheal's handler rather than adding another.
    Only the `selfheal` logger tree and `py.warnings` (where logging.captureWarnings sends
    Python's warnings) are touched, not the root logger of a host program."""
    log_format = (log_format or os.environ.get(FORMAT_ENV) or "text").lower()
    level = (level or os.environ.get(LEVEL_ENV) or "warning").lower()
    if log_format not in FORMATS:
        raise click.BadParameter(f"{log_format!r} is not one of {', '.join(FORMATS)}", param_hint=f"${FORMAT_ENV}")
    if level not in LEVELS:
        raise click.BadParameter(f"{level!r} is not one of {', '.join(LEVELS)}", param_hint=f"${LEVEL_ENV}")
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(_stderr_is_journal()))
    # Python's warnings (a library's DeprecationWarning, a ResourceWarning) leave as log lines
    # too, at warning level, instead of bare text through warnings.showwarning
    logging.captureWarnings(True)
    for name in ("selfheal", "py.warnings"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False  # one line per record, not a second through the root's handlers
    return handler


def last_word(text: str, level: int = logging.ERROR) -> None:
    """A command's last line on stderr (`selfheal: error: ...`, `selfheal: interrupted`), whatever
    the level: as text, or, where --log-format json is configured, as a JSON line like every
    other, so a service's JSON journal ends with its reason for ending and no bare text."""
    handler = next((h for h in logging.getLogger("selfheal").handlers if isinstance(h, _Handler)), None)
    formatter = handler.formatter if handler is not None else None
    if not isinstance(formatter, JsonFormatter):  # under journald, filed at its level as the others are
        journald = isinstance(formatter, TextFormatter) and formatter.journald
        click.echo(f"<{_PRIORITY[level]}>{text}" if journald else text, err=True)
        return
    message = text.removeprefix("selfheal: ").removeprefix("error: ")
    record = logging.LogRecord("selfheal.cli", level, __file__, 0, message, None, None)
    click.echo(formatter.format(record), err=True)


def interrupted() -> NoReturn:
    """A command stopped by SIGINT or SIGTERM: its last word, and the exit code for both."""
    last_word("selfheal: interrupted", logging.INFO)  # a stop (a service's, too), not a fault
    sys.exit(exits.INTERRUPTED)


def _remember(ctx: click.Context, param: click.Parameter, value):
    ctx.meta[f"selfheal.{param.name}"] = value
    configure(ctx.meta.get("selfheal.log_format"), ctx.meta.get("selfheal.log_level"))
    return value


def logging_options(command):
    """The group's `--log-format` and `--log-level`; logging is configured as they are parsed,
    before any subcommand runs, so a command never needs to know about them."""
    command = click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
                           expose_value=False, callback=_remember,
                           help=f"Lowest level of selfheal's own log lines on stderr. Default: ${LEVEL_ENV}, else warning.")(command)
    return click.option("--log-format", type=click.Choice(FORMATS, case_sensitive=False), default=None,
                        expose_value=False, callback=_remember,
                        help=f"selfheal's own log lines on stderr: text, or json (one object a line, with time, "
                             f"level, deployment, run and incident ids). Default: ${FORMAT_ENV}, else text.")(command)
