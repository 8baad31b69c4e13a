"""Commands over the log itself: init, events, verify, rebuild."""
from __future__ import annotations

import sys

import click

import selfheal
from selfheal.cli.output import as_of as _as_of, emit_json, progress_printer, to_json
from selfheal.eventstore.audit import row_json


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
@click.option("--type", "types", multiple=True, help="Event type (repeatable).")
@click.option("--stream", help="One stream, e.g. run-<id>.")
@click.option("--correlation", help="Correlation id: every event of one incident's chain.")
@click.option("--since", help="occurred_at >= this ISO-8601 time.")
@click.option("--until", help="occurred_at < this ISO-8601 time.")
@click.option("--after", type=int, default=0, help="Only positions after this one.")
@click.option("--as-of", "as_of", help="What the log held at a position or ISO-8601 time.")
@click.option("--limit", type=click.IntRange(min=0), default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines).")
@click.pass_obj
def events(ctx, types, stream, correlation, since, until, after, as_of, limit, as_json) -> None:
    """List events, oldest first."""
    rows = selfheal.events(types=types, stream=stream, correlation=correlation, since=since, until=until,
                           after=after, as_of=_as_of(as_of), limit=limit, **ctx.db)
    for row in rows:
        if as_json:
            click.echo(row_json(row))
        else:
            click.echo(f"{row.position:>7}  {row.occurred_at}  {row.type:<22} {row.stream}")


@click.command()
@click.option("--json", "as_json", is_flag=True)
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
@click.option("--as-of", "as_of", help="Rebuild as of a position or ISO-8601 time.")
@click.option("--json", "as_json", is_flag=True)
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
