"""systemd's notify protocol (sd_notify(3)), without libsystemd: a datagram to $NOTIFY_SOCKET.

A long-running command (`run --follow`, `observe`, `supervise`) under a `Type=notify` unit says
READY=1 once it is watching, STATUS= lines, WATCHDOG=1 every half of $WATCHDOG_USEC while a
`WatchdogSec=` is set, and STOPPING=1 when it ends. Where $NOTIFY_SOCKET is not set every call
does nothing, so the same command runs the same outside systemd.

The watchdog pings come from a thread, and only while the command's own loop has said within
the watchdog period that it is alive (`alive()`): a loop stuck in one step stops the pings
and systemd restarts the service.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes:
    # a leading @ names an abstract socket: its name starts with a NUL byte
    return b"\0" + value[1:].encode() if value.startswith("@") else value


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())  # a watchdog meant for another process is not ours
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_alive = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, *fields: str) -> bool:
        """Send `fields` (`READY=1`, `STATUS=...`) as one datagram; False when not under systemd
        or when the send failed (logged: a notify failure must never stop the service)."""
        if self.socket_path is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(_address(self.socket_path))
                sock.sendall("\n".join(fields).encode())
            return True
        except OSError as exc:
            log.warning("systemd notify to %s failed: %s", self.socket_path, exc)
            return False

    def alive(self) -> None:
        """The command's loop finished a step: the watchdog may be fed for another period."""
        self._last_alive = time.monotonic()

    def _feed(self) -> None:
        interval = self.watchdog_s / 2
        while not self._stop.wait(interval):
            if time.monotonic() - self._last_alive <= self.watchdog_s:
                self.notify("WATCHDOG=1")
            else:
                log.warning("no progress for %.0f s: not feeding systemd's watchdog", time.monotonic() - self._last_alive)

    def start(self, status: str) -> None:
        """READY=1 with `status`, and the watchdog thread where a watchdog is set."""
        self.alive()
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        if self.enabled and self.watchdog_s and self._thread is None:
            self._thread = threading.Thread(target=self._feed, name="selfheal-watchdog", daemon=True)
            self._thread.start()

    def stop(self, status: str = "stopping") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.notify("STOPPING=1", f"STATUS={status}")
