"""Commands over the log itself: init, events, verify, rebuild."""
from __future__ import annotations

import sys

import click

import selfheal
from selfheal.cli.inputs import TIME_HELP, Count, check_types, optional_time, resolve_prefix
from selfheal.cli.output import (as_of as _as_of, emit_json, emit_rows, event_json, progress_printer, row_style,
                                 table_options, to_json)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def init(ctx, as_json: bool) -> None:
    """Create the event log (or migrate an older one)."""
    result = selfheal.init(ctx.db_path, synchronous=ctx.synchronous)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"log ready at {result['path']} ({result['events']} events)")


@click.command()
@click.option("--type", "types", multiple=True, help="Event type (repeatable); an unknown one is refused.")
@click.option("--stream", help="One stream, e.g. run-<id>; a prefix of it, or of the id in it, will do.")
@click.option("--correlation", help="Correlation (incident) id, or a prefix of it: every event of one chain.")
@click.option("--since", help=f"occurred_at >= this time ({TIME_HELP}).")
@click.option("--until", help="occurred_at < this time (as --since).")
@click.option("--after", type=Count(), default=0, help="Only positions after this one.")
@click.option("--as-of", "as_of", help="What the log held at a position or a time (as --since).")
@click.option("--limit", type=Count(), default=None, help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines).")
@table_options
@click.pass_obj
def events(ctx, types, stream, correlation, since, until, after, as_of, limit, as_json, as_table, as_csv) -> None:
    """List events, oldest first."""
    style = row_style(as_json, as_table, as_csv)
    types = check_types(types)
    query = dict(types=types, since=optional_time(since, "--since"), until=optional_time(until, "--until"),
                 after=after, as_of=_as_of(as_of), limit=limit)
    with selfheal.open_db(**ctx.db) as store:
        stream = stream and _known_id(store, "stream", stream, "--stream")
        correlation = correlation and _known_id(store, "correlation_id", correlation, "--correlation")
        rows = selfheal.events(stream=stream, correlation=correlation, db=store, **query)
        if style in ("table", "csv"):
            emit_rows([{"position": r.position, "occurred_at": r.occurred_at, "type": r.type, "stream": r.stream,
                        "correlation_id": r.correlation_id} for r in rows], style)
            return
        for row in rows:
            click.echo(event_json(row) if as_json else f"{row.position:>7}  {row.occurred_at}  {row.type:<22} "
                                                       f"{row.stream}")


def _known_id(store, column: str, given: str, option: str) -> str:
    """`given` as the log holds it: an exact stream or correlation id as it is, else the one
    it is a prefix of (the rule `show` has); nothing, or several, is an error."""
    where = {"stream": given} if column == "stream" else {"correlation": given}
    if next(iter(selfheal.events(db=store, limit=1, **where)), None) is not None:
        return given
    seen = {value for page in store.recorder.pages(["position", column]) for (_position, value) in page if value}
    return resolve_prefix("stream" if column == "stream" else "correlation id", given, seen, option)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def verify(ctx, as_json: bool) -> None:
    """Check the hash chain of the whole log; exit 1 at the first break."""
    report = selfheal.verify(**ctx.db)
    if as_json:
        emit_json(report)
    elif report.ok:
        click.echo(f"ok: {report.events} events, head {report.head_position} {report.head_hash}")
    if not report.ok:
        where = f"position {report.first_break.position}" if report.first_break.position else "log"
        click.echo(f"selfheal: verify failed at {where}: {report.first_break.problem}", err=True)
        sys.exit(1)


@click.command()
@click.option("--as-of", "as_of", help=f"Rebuild as of a position or a time ({TIME_HELP}).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def rebuild(ctx, as_of: str | None, as_json: bool) -> None:
    """Rebuild every projection from scratch, with progress."""
    update, done = progress_printer("rebuilding")
    try:
        result = selfheal.rebuild(as_of=_as_of(as_of), progress=update, **ctx.db)
    finally:
        done()
    if as_json:
        emit_json(result)
    else:
        click.echo(f"rebuilt {len(result['projections'])} projections up to position {result['position']}")
        for name, state in result["projections"].items():
            click.echo(f"  {name}: {to_json(state)}")


def register(group: click.Group) -> None:
    for command in (init, events, verify, rebuild):
        group.add_command(command)
