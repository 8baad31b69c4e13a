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


def as_of(value: str | None) -> int | str | None:
    """`--as-of`: a position (digits) or an ISO-8601 time."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


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
