"""Follow a systemd unit's journal: ``journalctl -o json -f -u UNIT``, one message line at a time.

`journal(unit, stop=...)` starts journalctl as an argument list (never through a shell) and
yields the MESSAGE of each entry:

- journald stores MESSAGE as a string, or, when it is not valid UTF-8 text, as an array of byte
  values; those are decoded as UTF-8 with replacement characters. An entry with no MESSAGE, or a
  null one, is skipped;
- an entry whose MESSAGE holds several lines is yielded line by line, so that consumers see
  lines exactly as `edges.follow.follow` gives them (a unit's stdout is normally one entry per
  line anyway);
- ``--all`` is passed because journalctl otherwise prints fields longer than 4096 bytes as
  null, and a long vLLM error (a pydantic error, a PyTorch OOM) is exactly what must be read;
- without `since`, ``-n 0`` starts at the current end of the journal, like `follow` without
  `from_start`: old entries were either handled already or belong to an older deployment;
  with `since`, journalctl's own ``--since`` syntax is passed through.

The subprocess ends (SIGTERM, then SIGKILL after `term_timeout_s`) when `stop` is set or the
iterator is closed. A missing journalctl raises `JournalctlNotFound` at the call, before any
iteration; journalctl exiting by itself with a non-zero status raises `JournalError` with the
end of its stderr.
"""
from __future__ import annotations

import json
import logging
import os
import select
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: a JSON line longer than this (no newline in sight) is dropped rather than buffered
_MAX_JSON_LINE = 8 << 20


class JournalError(RuntimeError):
    """journalctl could not be run, or stopped with an error."""


class JournalctlNotFound(JournalError):
    def __init__(self, binary: str):
        super().__init__(f"journald input needs {binary!r}, which was not found or is not executable "
                         f"(install systemd's journalctl, or pass its full path)")
        self.binary = binary


def journal(unit: str, *, stop: threading.Event, journalctl: str = "journalctl", since: str | None = None,
            poll_s: float = 0.2, term_timeout_s: float = 2.0) -> Iterator[str]:
    """Yield the message lines of `unit`'s new journal entries until `stop` is set."""
    exe = shutil.which(journalctl)
    if exe is None:
        raise JournalctlNotFound(journalctl)
    args = [exe, "-o", "json", "--all", "-f", "-u", unit]
    args += ["--since", since] if since is not None else ["-n", "0"]
    return _stream(args, journalctl, stop, poll_s, term_timeout_s)


def _stream(args: list[str], name: str, stop: threading.Event, poll_s: float,
            term_timeout_s: float) -> Iterator[str]:
    # stderr goes to a file: a pipe nobody reads could fill up and block journalctl
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        except (FileNotFoundError, PermissionError) as exc:  # removed between which() and exec
            raise JournalctlNotFound(name) from exc
        try:
            yield from _read(proc, stop, poll_s)
            if not stop.is_set():
                status = proc.wait()
                if status != 0:
                    err.seek(0)
                    # one line for the CLI: the last few things it said
                    said = [x.strip() for x in err.read()[-4000:].decode("utf-8", "replace").splitlines()]
                    tail = "; ".join([x for x in said if x][-3:]) or "(no message)"
                    raise JournalError(f"{name} exited with status {status}: {tail}")
        finally:
            _end(proc, term_timeout_s)


def _read(proc: subprocess.Popen, stop: threading.Event, poll_s: float) -> Iterator[str]:
    # select() with a timeout rather than a blocking readline: a quiet unit must not keep us
    # from noticing `stop`
    fd = proc.stdout.fileno()
    buf = bytearray()
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], poll_s)
        if not ready:
            continue
        data = os.read(fd, 1 << 16)
        if not data:
            return  # journalctl exited
        buf += data
        pos = 0
        while (nl := buf.find(b"\n", pos)) >= 0:
            yield from _messages(bytes(buf[pos:nl]))
            pos = nl + 1
        del buf[:pos]
        if len(buf) > _MAX_JSON_LINE:
            log.warning("journalctl printed a line over %d bytes; dropped", _MAX_JSON_LINE)
            buf.clear()


def _messages(raw: bytes) -> list[str]:
    if not raw.strip():
        return []
    try:
        entry = json.loads(raw)
    except ValueError:
        log.warning("journalctl printed a line that is not JSON; skipped: %.200r", raw)
        return []
    message = entry.get("MESSAGE") if isinstance(entry, dict) else None
    if isinstance(message, list):
        try:
            message = bytes(message).decode("utf-8", "replace")
        except (TypeError, ValueError):  # not a byte array after all
            return []
    if not isinstance(message, str):
        return []
    if message.endswith("\n"):
        message = message[:-1]
    return [part[:-1] if part.endswith("\r") else part for part in message.split("\n")]


def _end(proc: subprocess.Popen, term_timeout_s: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=term_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
