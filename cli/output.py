"""Printing helpers shared by commands: JSON for tools, short lines for people."""
from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Sequence
from datetime import datetime

import click
import msgspec

from selfheal.cli.inputs import position_or_time
from selfheal.eventstore.audit import row_json
from selfheal.eventstore.recorder import utc_iso

_encode = msgspec.json.Encoder(order="deterministic").encode


def to_json(value) -> str:
    return _encode(value).decode()


def emit_json(value) -> None:
    click.echo(to_json(value))


def as_of(value: str | None) -> int | datetime | None:
    """`--as-of`: a position (digits) or a time (cli/inputs.py reads both)."""
    return position_or_time(value, "--as-of")


def show_time(moment: datetime | str | None, missing: str = "") -> str:
    """Every time a command prints, in the log's one spelling: ISO-8601 UTC with microseconds
    and a 'Z' (2026-11-24T07:00:00.000000Z), so that a time copied into --as-of, --since or
    --until means the instant shown."""
    if moment is None:
        return missing
    return moment if isinstance(moment, str) else utc_iso(moment)


def event_json(row) -> str:
    """One event as `events --json` prints it (the envelope: position, ids, times, data as an
    object); every command that prints a stream of events prints it so, one per line."""
    return row_json(row)


def emit_rows(rows: Sequence[dict], style: str) -> None:
    """Rows of a query as `--table` (aligned columns) or `--csv` (a header, then RFC 4180)."""
    if not rows:
        return
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    if style == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        click.echo(out.getvalue(), nl=False)
        return
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for line in (columns, ["-" * w for w in widths], *cells):
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


def _cell(value) -> str:
    """A value as JSON spells it (true, not Python's True; a config as an object, never a repr)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, (bool, dict, list, tuple, msgspec.Struct)):
        return to_json(value)
    return str(value)


def table_options(fn):
    """`--table` and `--csv`: a query's rows for people and for spreadsheets, as sqlite-utils
    prints them."""
    fn = click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV with a header.")(fn)
    return click.option("--table", "as_table", is_flag=True, help="Print the rows as an aligned table.")(fn)


def row_style(as_json: bool, as_table: bool, as_csv: bool) -> str | None:
    if as_json + as_table + as_csv > 1:
        raise click.UsageError("give one of --json, --table, --csv")
    return "json" if as_json else "table" if as_table else "csv" if as_csv else None


def progress_printer(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress callback `(position, total)` for long work: a bar on a terminal, nothing
    when piped; the second callable closes the bar."""
    if not sys.stderr.isatty():
        return (lambda position, total: None), (lambda: None)
    state = {"done": 0, "bar": None}

    def update(position: int, total: int) -> None:
        if total <= 0:
            return
        if state["bar"] is None:
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            state["bar"].__enter__()
        if position - state["done"] >= 1000 or position == total:
            state["bar"].update(position - state["done"])
            state["done"] = position

    def done() -> None:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)

    return update, done
