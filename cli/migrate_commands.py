"""`selfheal migrate`: move an embedded log to a PostgreSQL server (eventstore/migration.py)."""
from __future__ import annotations

import errno
from pathlib import Path

import click

import selfheal
from selfheal.cli.inputs import AFile
from selfheal.cli.output import emit_json
from selfheal.eventstore.store import is_server


@click.command()
@click.option("--from", "source", required=True, type=AFile(),
              help="The SQLite log to copy.")
@click.option("--to", "target", required=True, help="The PostgreSQL log: postgresql://USER@HOST:PORT/DATABASE.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def migrate(source: str, target: str, as_json: bool) -> None:
    """Copy an embedded log into an empty PostgreSQL log; the hash chain is verified on both sides."""
    if not is_server(target):  # malformed: usage (exit 2); a missing --from file is exit 1, as everywhere
        raise click.BadParameter(f"{target!r}: give a postgresql:// URL (the file log is the source)", param_hint="--to")
    if not Path(source).exists():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", source)
    result = selfheal.migrate(source, target)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"copied {result.events} events, {result.keys} keys and {result.checkpoints} checkpoints to "
                   f"{result.target}; both chains verify, head {result.head_position} {result.head_hash}")


def register(cli: click.Group) -> None:
    cli.add_command(migrate)
