"""What the long-running commands (`run --follow`, `observe`, `supervise`) do as services:
`--metrics-port` (edges/metrics_server.py), and systemd's notify protocol where $NOTIFY_SOCKET
is set (edges/systemd_notify.py).

The commands themselves know nothing of it: `add_service_options` gives each its options and
wraps its callback, so the service part starts before the command's work and stops after it
however it ends (SIGTERM included: main turns it into KeyboardInterrupt).
"""
from __future__ import annotations

import functools

import click

from selfheal.cli.describe import describe
from selfheal.edges.operator_service import serving

#: the commands that run until stopped, and whether they run the loop's handlers
SERVICES = {"run": True, "observe": False, "supervise": False}


def _wrap(name: str, callback):
    @functools.wraps(callback)
    def wrapped(*args, metrics_port: int | None, metrics_address: str, **kwargs):
        ctx = click.get_current_context()
        if name == "run" and not kwargs.get("follow") and metrics_port is not None:  # run ends when idle
            raise click.UsageError(f"--metrics-port serves a running service: give --follow to {name}")
        obj = ctx.obj  # the group's Context: where the log is
        with serving(name, obj.db_path, synchronous=obj.synchronous, runs_handlers=SERVICES[name],
                     metrics_port=metrics_port, metrics_address=metrics_address, summarize=describe):
            return callback(*args, **kwargs)
    return wrapped


def add_service_options(group: click.Group) -> None:
    """Give each command in SERVICES that `group` has `--metrics-port` and `--metrics-address`."""
    for name in SERVICES:
        command = group.commands.get(name)
        if command is None or command.callback is None:
            continue
        command.params.append(click.Option(
            ["--metrics-port"], type=click.IntRange(0, 65535), default=None,
            help="Serve selfheal's own Prometheus metrics on this port (0: any free one) at /metrics"
                 + (" (with --follow)." if name == "run" else ".")))
        command.params.append(click.Option(
            ["--metrics-address"], default="127.0.0.1", show_default=True,
            help="The address the metrics are served on (0.0.0.0 in a container)."))
        command.callback = _wrap(name, command.callback)
