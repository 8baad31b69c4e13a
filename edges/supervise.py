"""`selfheal supervise`: run a deployment's vLLM server from its baseline YAML, and restart it
on SIGHUP. vLLM itself exits on SIGHUP; supervising it makes the signal reload path real.

The server runs in its own process group, marked, and is always stopped with its whole group
(SIGTERM, then SIGKILL) when selfheal stops, so no orphan is ever left behind. SIGTERM and
SIGINT stop the server and then selfheal.

It runs with the deployment's `env` over selfheal's own environment, as the canaries did (a
variable a canary was proven with reaches production too), and `--api-key`/`--hf-token` in
`serve_command` move to VLLM_API_KEY/HF_TOKEN there (edges/credentials.py): no secret on the
server's argv, nor in the lines `supervise` reports.
"""
from __future__ import annotations

import os
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from selfheal.edges.processes import spawn
from selfheal.edges.reload import production_launch, wait_healthy

RESTART_BACKOFF_S = 1.0


def serve_argv(settings) -> list[str]:
    """`serve_command` filled in, its credentials taken off (see `serve_launch`)."""
    return serve_launch(settings)[0]


def serve_launch(settings) -> tuple[list[str], dict[str, str]]:
    """(argv, whole environment) production is started with (reload.production_launch)."""
    if not settings.config_file:
        raise ValueError("supervise: the deployment has no config_file to serve from")
    argv, env, _ = production_launch(settings)
    return argv, env


def supervise(settings, *, report: Callable[[str], None], stop: threading.Event | None = None,
              pidfile: str | None = None, grace_s: float = 15.0) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); SIGHUP restarts the server with the current YAML."""
    stop = stop or threading.Event()
    hup = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if pidfile:
        Path(pidfile).write_text(f"{os.getpid()}\n")
    logdir = Path(tempfile.mkdtemp(prefix="selfheal-supervise-"))
    child = None
    restarts = 0
    try:
        while not stop.is_set():
            argv, env = serve_launch(settings)
            child = spawn(argv, env, logdir / f"server-{restarts}.log", canary_id=f"supervised-{uuid.uuid4()}")
            report(f"started pid {child.pid}: {' '.join(argv)}")
            healthy = False
            # poll health without blocking, so a crash or a SIGHUP is seen at once
            while not stop.is_set() and not hup.is_set():
                if child.poll() is not None:
                    report(f"server exited with {child.poll()}; restarting in {RESTART_BACKOFF_S:g} s")
                    stop.wait(RESTART_BACKOFF_S)
                    break
                if settings.health_url and not healthy:
                    healthy, _ = wait_healthy(settings.health_url, 0.2, poll_s=0.1, request_timeout_s=0.5)
                    if healthy:
                        report(f"healthy: {settings.health_url}")
                stop.wait(0.2)
            if hup.is_set():
                hup.clear()
                report("SIGHUP: restarting with the current baseline")
            how = child.stop(grace_s)
            report(f"stopped pid {child.pid} ({how})")
            child = None
            restarts += 1
        return 0
    finally:
        if child is not None:
            child.stop(grace_s)
        if pidfile:
            Path(pidfile).unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
