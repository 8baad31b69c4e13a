"""Printing helpers shared by commands: JSON for tools, short lines for people."""
from __future__ import annotations

import sys
from collections.abc import Callable

import click
import msgspec

_encode = msgspec.json.Encoder(order="deterministic").encode


def to_json(value) -> str:
    return _encode(value).decode()


def emit_json(value) -> None:
    click.echo(to_json(value))


def progress_printer(total: int, label: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A progress callback for long work: a bar on a terminal, nothing when piped."""
    if not sys.stderr.isatty() or total <= 0:
        return (lambda position: None), (lambda: None)
    bar = click.progressbar(length=total, label=label, file=sys.stderr)
    bar.__enter__()
    state = {"done": 0}

    def update(position: int) -> None:
        if position - state["done"] >= 1000 or position == total:
            bar.update(position - state["done"])
            state["done"] = position

    return update, (lambda: bar.__exit__(None, None, None))
