"""Process groups for canaries: start one apart, find it again by its marker, stop all of it.

A canary (`vllm serve`) is a tree of processes: the API server, the engine core, workers,
compile helpers. Each canary is started as the leader of a new session, hence of its own
process group, so one `killpg` reaches every descendant that did not leave the group on
purpose. Every process of the group inherits `SELFHEAL_CANARY_ID=<id>` in its environment;
that marker is how a restarted selfheal recognises a group it left behind in a crash
(the pid and pgid it recorded may since have been recycled by unrelated processes).

Liveness is read from /proc (Linux), ignoring zombies: a zombie holds no memory and cannot
be signalled away, and in a container whose init does not reap, orphaned zombies would
otherwise look alive forever. Where /proc is missing, `os.killpg(pgid, 0)` is the fallback.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "SELFHEAL_CANARY_ID"
_PROC = Path("/proc")
#: how long to wait for the kernel to finish a SIGKILL before calling the group unkillable
_KILL_WAIT_S = 5.0
_POLL_S = 0.02


@dataclass
class Child:
    """A spawned canary: the leader's Popen, its group and the marker its processes carry."""

    popen: subprocess.Popen = field(repr=False)
    pid: int
    pgid: int
    canary_id: str
    argv: list[str]
    log_path: Path
    #: pids outside the group that `stop` found by the marker and stopped
    swept: list[int] = field(default_factory=list)

    def poll(self) -> int | None:
        """The leader's exit code, or None while it runs (the rest of the group may outlive it)."""
        return self.popen.poll()

    def stop(self, grace_s: float) -> str:
        """Stop the whole group (see `stop_group`), reap the leader so no zombie is left, then
        sweep: every process still carrying this child's marker, in whatever group or session
        it moved to (`setsid`, a daemonizing helper), is stopped too (`stop_marked`)."""
        try:
            how = stop_group(self.pgid, grace_s)
            try:
                self.popen.wait(timeout=_KILL_WAIT_S)
            except subprocess.TimeoutExpired:  # cannot happen after a successful SIGKILL; never hang on it
                pass
        finally:
            self.swept = stop_marked(self.canary_id, grace_s)
        return how


def spawn(argv: list[str], env: dict[str, str], log_path: str | os.PathLike, *,
          canary_id: str | None = None, cwd: str | os.PathLike | None = None) -> Child:
    """Start `argv` (an argument list, never a shell) as the leader of a new process group.

    `env` is the child's whole environment; the marker `SELFHEAL_CANARY_ID` is set in it to
    `canary_id` (or to the env's own value, or a fresh id). stdout and stderr both go to
    `log_path`, interleaved as the process writes them; stdin is /dev/null.
    """
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("argv must be a non-empty argument list, never a shell string")
    cid = canary_id or env.get(MARKER) or uuid.uuid4().hex
    full_env = {**env, MARKER: cid}
    path = Path(log_path)
    with open(path, "wb") as log:  # the child keeps its own descriptor; ours closes on return
        popen = subprocess.Popen([str(a) for a in argv], env=full_env, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True, close_fds=True)
    try:
        pgid = os.getpgid(popen.pid)
    except ProcessLookupError:  # already gone and reaped is impossible here, but a session leader's pgid is its pid
        pgid = popen.pid
    return Child(popen=popen, pid=popen.pid, pgid=pgid, canary_id=cid, argv=list(map(str, argv)), log_path=path)


# --- reading /proc ------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of a process, or None if it is gone. The command name may contain ') ',
    so the fields are read after the last ')'."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[2])


def _pids() -> list[int]:
    return [int(name) for name in os.listdir(_PROC) if name.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    out = []
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs (zombies do not count)."""
    if _PROC.is_dir():
        return bool(group_members(pgid))
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to someone else
        return True
    return True


def carries_marker(pid: int, canary_id: str) -> bool:
    """Whether process `pid` has `SELFHEAL_CANARY_ID=<canary_id>` in its environment.

    An unreadable environ (another user's process, a zombie, a vanished pid) counts as no:
    the marker is what allows a kill, so doubt never does."""
    return f"{MARKER}={canary_id}".encode() in _environ(pid)


def _environ(pid: int) -> list[bytes]:
    """The NAME=value items of a process's environment ([] when it cannot be read)."""
    try:
        return (_PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


def marked_processes(canary_id: str) -> list[int]:
    """Every live process carrying the marker of `canary_id` (what must be empty after a canary)."""
    return [pid for pid in _live() if carries_marker(pid, canary_id)]


def marked_groups(canary_id: str) -> list[tuple[int, int]]:
    """(pid, process group) for each group with a live process carrying the marker of
    `canary_id`, the group's leader named where it is marked. This is how a group is found that
    a crash left behind between the canary's start and its record in the log."""
    groups: dict[int, list[int]] = {}
    for pid in marked_processes(canary_id):
        st = _stat(pid)
        if st is not None:
            groups.setdefault(st[1], []).append(pid)
    return sorted((pgid if pgid in pids else min(pids), pgid) for pgid, pids in groups.items())


def processes_marked_with(prefix: str = "") -> list[int]:
    """Every live process whose marker value starts with `prefix` ("": any canary or
    supervised server at all): what tests check is empty after they stop their processes."""
    needle = f"{MARKER}={prefix}".encode()
    return [pid for pid in _live() if any(item.startswith(needle) for item in _environ(pid))]


def _live() -> list[int]:
    """Pids of processes that are neither zombies nor gone."""
    out = []
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of the group's live processes, summed (shared pages count once per process)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in group_members(pgid):
        try:
            total += int((_PROC / str(pid) / "statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total


class PeakRss(threading.Thread):
    """The group's peak summed RSS, sampled every `period_s` from construction until `stop()`."""

    def __init__(self, pgid: int, period_s: float = 0.25):
        super().__init__(name=f"rss-{pgid}", daemon=True)
        self.pgid, self.period_s, self.peak = pgid, period_s, 0
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, group_rss_bytes(self.pgid))
            if self._done.wait(self.period_s):
                return

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._done.set()
        self.join()
        return self.peak


# --- stopping -----------------------------------------------------------------------------------

def _wait_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def stop_group(pgid: int, grace_s: float) -> str:
    """Stop every process of group `pgid`: SIGTERM, then SIGKILL if any is left after `grace_s`.

    Returns the signal that ended the group: "SIGTERM", "SIGKILL", or "none" when it was
    already gone. Raises RuntimeError if processes survive SIGKILL (stuck in the kernel)."""
    if not group_alive(pgid):
        return "none"
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return "none"
    if _wait_gone(pgid, grace_s):
        return "SIGTERM"
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # the last one left between the check and the kill
        return "SIGTERM"
    if _wait_gone(pgid, _KILL_WAIT_S):
        return "SIGKILL"
    raise RuntimeError(f"process group {pgid} survived SIGKILL: {group_members(pgid)}")


def _signal_marked(pid: int, canary_id: str, sig: int) -> bool:
    """Send `sig` to `pid` only if it carries the marker of `canary_id`; whether it was sent.

    Through a pidfd where the kernel has them: the pidfd is opened before the marker is
    checked, so the signal can only reach the process that was checked (if it exited and its
    pid was reused in between, the signal goes nowhere), never an unrelated process."""
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfds here: a plain kill, after the same check
        pass
    try:
        if not carries_marker(pid, canary_id):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _sweep_wait(canary_id: str, timeout_s: float) -> list[int]:
    """The marked processes still alive once none are left or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = marked_processes(canary_id)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(_POLL_S)


def stop_marked(canary_id: str, grace_s: float) -> list[int]:
    """Stop every live process that carries the marker of `canary_id`, in any process group or
    session: SIGTERM, then SIGKILL for those left after `grace_s`. Returns the pids found.

    This is what a canary's end must leave behind: nothing with its marker. A process that
    left the canary's group (`setsid`, `setpgid`, a double fork) is out of `killpg`'s reach but
    keeps the marker it inherited. Processes forked meanwhile by a marked one inherit the
    marker too, so SIGKILL is repeated on a fresh scan until none is left. Raises RuntimeError
    if marked processes survive SIGKILL (stuck in the kernel). A process that removed the
    marker from its own environment (`env -i`) is not found: the limit of a marker, where a
    cgroup would reach it (see RELIABILITY.md)."""
    found = marked_processes(canary_id)
    if not found:
        return []
    for pid in found:
        _signal_marked(pid, canary_id, signal.SIGTERM)
    left = _sweep_wait(canary_id, grace_s)
    deadline = time.monotonic() + _KILL_WAIT_S
    while left:
        for pid in left:
            _signal_marked(pid, canary_id, signal.SIGKILL)
        found += [pid for pid in left if pid not in found]
        left = _sweep_wait(canary_id, min(0.5, max(0.0, deadline - time.monotonic())))
        if left and time.monotonic() >= deadline:
            raise RuntimeError(f"processes marked {MARKER}={canary_id} survived SIGKILL: {left}")
    return sorted(found)


def reap_orphan(pid: int, pgid: int, canary_id: str, grace_s: float = 10.0) -> tuple[bool, str | None]:
    """Stop a canary group left behind by a crashed selfheal, if it still exists.

    Returns (alive, signal): whether a process of that canary was still running, and the
    signal that stopped it. The group is stopped only if a live process in it (or `pid`
    itself) carries the canary's marker. Linux never hands out a pid that is still in use
    as a process-group id, so a marked member proves the group is the canary's; a group
    with no marked member is someone else's (the ids were recycled) and is left alone:
    (False, None). A remaining race: the last marked process may exit and the id be reused
    between this check and the signal; the window is a few /proc reads long.
    """
    members = set(group_members(pgid))
    marked = [p for p in sorted(members | {pid}) if carries_marker(p, canary_id)]
    if not marked:
        return False, None
    if any(p in members for p in marked):
        return True, stop_group(pgid, grace_s)
    # the leader left its group (setsid/setpgid): stop it on its own, still only because it is marked
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (_stat(pid) or ("Z",))[0] not in ("Z", "X"):
            time.sleep(_POLL_S)
        if (_stat(pid) or ("Z",))[0] in ("Z", "X"):
            return True, "SIGTERM"
        os.kill(pid, signal.SIGKILL)
        return True, "SIGKILL"
    except ProcessLookupError:
        return True, "SIGTERM"


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now. The OS may hand it to someone else before the
    canary binds it; the canary then fails to start with 'Address already in use', a visible
    startup failure."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class CanaryReaper:
    """The ProcessReaper port (handlers.ports) over this module's marker scan."""

    def reap(self, pid: int, pgid: int, canary_id: str) -> tuple[bool, str | None]:
        return reap_orphan(pid, pgid, canary_id)

    def unrecorded(self, canary_id: str) -> list[tuple[int, int]]:
        return marked_groups(canary_id)
