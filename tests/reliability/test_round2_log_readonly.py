"""Issue 13, round two, item 13: a log on read-only media, or on a full disk, can be audited.

Every command, `verify` included, said `not a SQLite database (unable to open database file)`
on a read-only log, and a full disk gave the same words. Now queries and `verify` open such a
log read-only and work; a write fails with one line naming the file and the true reason; and
"cannot open", "not a database", "read-only" and "disk full" are told apart.

Tests may run as root, whom chmod does not stop: the commands then run with the capabilities
that override file permissions dropped (`setpriv --bounding-set`), so root meets the mode bits
as any user does. A full disk is SQLite's `max_page_count` in the library (as the older
full-disk test does), and a real full tmpfs through the CLI where this machine may mount one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfheal.eventstore import open_store
from selfheal.eventstore.errors import StoreFull
from selfheal.eventstore.recorder import AppendRequest, CheckpointAdvance
from tests.conftest import archived
from tests.reliability.hostile import ENV, ROOT, Result, assert_one_line_error

#: what lets root write whatever the mode bits say
OVERRIDES = "-dac_override,-dac_read_search"


def _as_a_user(*argv: str) -> list[str]:
    """`argv` run so that file modes bind it: as it is for a user, without the overrides for root."""
    if os.geteuid() != 0:
        return list(argv)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: nothing here can make a file read-only to root")
    return [setpriv, "--bounding-set", OVERRIDES, "--", *argv]


def _selfheal(tmp_path: Path, *args: str) -> Result:
    started = time.monotonic()
    done = subprocess.run(_as_a_user(sys.executable, "-m", "selfheal", *args), cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    return Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started, 0.0)


def _log(folder: Path, events: int = 3) -> Path:
    folder.mkdir()
    db = folder / "log.db"
    with open_store(db, create=True) as store:
        store.append("in", [archived(i) for i in range(events)])
    return db


def _log_with_a_live_wal(folder: Path) -> Path:
    """A log whose two newest events are in its -wal only: the writer died before a checkpoint."""
    db = _log(folder)
    code = ("import os, sys; from selfheal.eventstore import open_store; from tests.conftest import archived\n"
            "s = open_store(sys.argv[1]); s.recorder.connection.execute('PRAGMA wal_autocheckpoint=0')\n"
            "s.append('in', [archived(10), archived(11)]); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(db)], cwd=ROOT, env=ENV, check=True)
    assert Path(f"{db}-wal").stat().st_size > 0
    return db


def _read_only(db: Path, *, folder_too: bool) -> None:
    for path in db.parent.iterdir():
        path.chmod(0o444)
    if folder_too:
        db.parent.chmod(0o555)


@pytest.fixture
def restore_modes(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


READ_ONLY = {
    "a read-only folder": (lambda folder: _log(folder), True, 3),
    "a read-only file in a writable folder": (lambda folder: _log(folder), False, 3),
    "a read-only folder, the newest events still in the -wal": (_log_with_a_live_wal, True, 5),
}


@pytest.mark.usefixtures("restore_modes")
@pytest.mark.parametrize("case", list(READ_ONLY))
def test_a_read_only_log_can_be_audited_and_refuses_writes_with_the_reason(tmp_path, case):
    make, folder_too, events = READ_ONLY[case]
    db = make(tmp_path / "media")
    _read_only(db, folder_too=folder_too)
    if folder_too:  # the check is real: this process cannot write there
        probe = subprocess.run(_as_a_user("touch", str(db.parent / "probe")), capture_output=True)
        assert probe.returncode != 0
    before = sorted(p.name for p in db.parent.iterdir())

    verified = _selfheal(tmp_path, "--db", str(db), "verify")
    assert verified.rc == 0 and verified.out.startswith(f"ok: {events} events"), (verified.out, verified.err)
    listed = _selfheal(tmp_path, "--db", str(db), "events")
    assert listed.rc == 0 and len(listed.out.splitlines()) == events, listed.err
    history = _selfheal(tmp_path, "--db", str(db), "history")
    assert history.rc == 0, history.err

    for command in ("run", "init"):
        refused = _selfheal(tmp_path, "--db", str(db), command)
        assert_one_line_error(refused)
        assert str(db) in refused.err and "read-only" in refused.err, refused.err
        assert "unexpected" not in refused.err and "not a SQLite database" not in refused.err
    # a library runner on a store opened for reading stops before it handles anything
    runner = subprocess.run(_as_a_user(sys.executable, "-c", RUNNER, str(db)), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert runner.stdout.startswith("StoreReadOnly ") and str(db) in runner.stdout, (runner.stdout, runner.stderr)
    if folder_too:
        assert sorted(p.name for p in db.parent.iterdir()) == before


#: a runner over a store opened by the library, which prints the error's class and words
RUNNER = ("import sys\nfrom selfheal.eventstore import open_store\nfrom selfheal.handlers.runtime import Runner\n"
          "from tests.reliability.procs import Stamp\nstore = open_store(sys.argv[1])\n"
          "try:\n    Runner(store, [Stamp()]).run_until_idle()\nexcept Exception as exc:\n"
          "    print(type(exc).__name__, exc)\n")


@pytest.mark.usefixtures("restore_modes")
def test_events_only_in_the_wal_are_never_skipped_silently(tmp_path):
    # no -shm, and none can be made: SQLite could open the file alone (immutable), without the
    # two newest events; that is refused, saying what to do
    db = _log_with_a_live_wal(tmp_path / "media")
    Path(f"{db}-shm").unlink()
    _read_only(db, folder_too=True)
    result = _selfheal(tmp_path, "--db", str(db), "verify")
    assert_one_line_error(result)
    assert str(db) in result.err and "log.db-wal holds events" in result.err, result.err


#: opens a log as the library does, and prints the error's class and words
OPEN = ("import sys\nfrom selfheal.eventstore.sqlite import SQLiteRecorder\n"
        "try:\n    SQLiteRecorder(sys.argv[1]).close()\nexcept Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n")


@pytest.mark.usefixtures("restore_modes")
def test_a_log_that_cannot_be_read_is_told_apart_from_one_that_is_no_database(tmp_path):
    # (the CLI's --db option refuses an unreadable file before the store sees it; the library does not)
    unreadable = _log(tmp_path / "media")
    unreadable.chmod(0)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 200)
    said = {}
    for path in (unreadable, garbage):
        done = subprocess.run(_as_a_user(sys.executable, "-c", OPEN, str(path)), cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=60)
        said[path.name] = done.stdout.strip()
    assert said["log.db"].startswith("CannotOpen ") and "not readable" in said["log.db"], said
    assert said["garbage.db"].startswith("NotASelfhealLog ") and "not a SQLite database" in said["garbage.db"], said


def test_every_write_on_a_full_disk_names_the_file_and_the_reason(tmp_path):
    db = tmp_path / "log.db"
    store = open_store(db, create=True)
    incident_id = "i-1"
    store.append("in", [archived(i) for i in range(10)])
    conn = store.recorder.connection
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [archived(f"lost-{i}") for i in range(400)]
    writes = {
        "append": lambda: store.append("in", big),
        "append with a checkpoint": lambda: store.append_many([("in", big)], [CheckpointAdvance("h", 0, 10)]),
        "a new secret": lambda: [store.recorder.secret(f"s{i}") for i in range(2000)],
        "forget": lambda: store.recorder.forget(incident_id, AppendRequest("in", [p.encoded() for p in big])),
    }
    for name, write in writes.items():
        with pytest.raises(StoreFull) as failed:
            write()
        assert str(db) in str(failed.value) and "full" in str(failed.value), (name, failed.value)
    # nothing was lost, and the log is still read and verified on the same connection
    assert store.last_position() == 10 and store.recorder.verify().ok
    assert [r.position for r in store.read()] == list(range(1, 11))
    store.close()


def _full_tmpfs(tmp_path: Path, db: Path, commands: list[str]) -> dict[str, Result]:
    """Each `selfheal --db LOG COMMAND` on a copy of `db` in a tmpfs that is full, mounted in a
    mount namespace of its own (skipped where this machine may not mount)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("no unshare: cannot mount a full tmpfs here")
    runs = " ".join(f"'{c}'" for c in commands)
    script = (f'mount -t tmpfs -o size=256k tmpfs "{mount}" || exit 77\n'
              f'cp "{db}" "{mount}/log.db"\n'
              f'dd if=/dev/zero of="{mount}/filler" bs=4k 2>/dev/null\n'
              f'for c in {runs}; do "{sys.executable}" -m selfheal --db "{mount}/log.db" $c '
              f'>"{tmp_path}/$c.out" 2>"{tmp_path}/$c.err"; echo $? >"{tmp_path}/$c.rc"; done\n')
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    if done.returncode == 77 or (done.returncode != 0 and "unshare" in done.stderr):
        pytest.skip(f"this machine may not mount a tmpfs: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    return {c: Result(int((tmp_path / f"{c}.rc").read_text()), (tmp_path / f"{c}.out").read_text(),
                      (tmp_path / f"{c}.err").read_text(), 0.0, 0.0) for c in commands}


def test_a_log_on_a_real_full_disk_can_be_audited_and_refuses_writes_as_full(tmp_path):
    db = _log(tmp_path / "src")
    results = _full_tmpfs(tmp_path, db, ["verify", "events", "history", "run"])
    assert results["verify"].rc == 0 and results["verify"].out.startswith("ok: 3 events"), results["verify"].err
    assert results["events"].rc == 0 and len(results["events"].out.splitlines()) == 3, results["events"].err
    assert results["history"].rc == 0, results["history"].err
    refused = results["run"]
    assert_one_line_error(refused)
    assert "log.db" in refused.err and "disk is full" in refused.err, refused.err

