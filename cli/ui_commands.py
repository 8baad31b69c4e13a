"""`selfheal ui`: the log in datasette, on loopback (the `ui` extra)."""
from __future__ import annotations

import click

import selfheal


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Loopback by default: the log holds production logs and configs.")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True, help="Port (0: any free one).")
@click.pass_obj
def ui(ctx, host, port) -> None:
    """Browse the log in datasette: events, each run's timeline, candidates and their canaries,
    predicted against measured, alerts, and canned queries. Read-only; the address printed carries
    a token, and a browser without it gets 403. Needs the `ui` extra: pip install 'vllm-selfheal[ui]'."""
    selfheal.ui(host=host, port=port, report=lambda line: click.echo(line, err=line.startswith("warning")), **ctx.db)


def register(group: click.Group) -> None:
    group.add_command(ui)
