"""follow(): a real file, a real writer, and the rotations logrotate performs."""
from __future__ import annotations

import os
import queue
import shutil
import threading
import time

import pytest

from selfheal.edges import follow as follow_mod
from selfheal.edges.follow import CUT_MARK, MAX_LINE, follow


class Follower:
    """Runs follow() in a thread and hands its lines over through a queue."""

    def __init__(self, path, **kwargs):
        self.stop = threading.Event()
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(path,), kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, path, **kwargs):
        try:
            for line in follow(path, stop=self.stop, poll_s=0.01, **kwargs):
                self.lines.put(line)
        except BaseException as exc:  # surfaced by close()
            self.errors.append(exc)

    def take(self, n: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        return [self.lines.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def quiet(self, wait: float = 0.1) -> bool:
        time.sleep(wait)
        return self.lines.empty()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "follow() did not return after stop"
        assert not self.errors, self.errors


@pytest.fixture
def start():
    followers = []

    def _start(path, **kwargs):
        f = Follower(path, **kwargs)
        followers.append(f)
        return f

    try:
        yield _start
    finally:
        for f in followers:
            f.stop.set()
        for f in followers:
            f.close()


def append(path, data: str | bytes):
    with open(path, "ab") as w:
        w.write(data.encode() if isinstance(data, str) else data)


def test_appended_lines_arrive_and_old_content_is_skipped(tmp_path, start, monkeypatch):
    path = tmp_path / "vllm.log"
    path.write_text("old line 1\nold line 2\nhalf of an old li")
    positioned = threading.Event()
    real_seek_end = follow_mod._seek_end

    def seek_end(*args):  # know when follow() has taken its starting position
        real_seek_end(*args)
        positioned.set()

    monkeypatch.setattr(follow_mod, "_seek_end", seek_end)
    f = start(path)
    assert positioned.wait(5)
    append(path, "ne\nnew 1\nnew 2\n")  # completes the old partial line, which is skipped
    assert f.take(2) == ["new 1", "new 2"]
    append(path, "new 3\r\nbad \xff byte\n".encode("latin-1"))
    assert f.take(2) == ["new 3", "bad \ufffd byte"]
    assert f.quiet()


def test_a_file_written_as_utf16_is_followed_as_its_text(tmp_path, start):
    # Windows PowerShell's redirection: its mark, then UTF-16 LE with CRLF, written in pieces that
    # cut a code unit in two; the file is empty when following begins
    path = tmp_path / "vllm_log.txt"
    path.write_bytes(b"")
    f = start(path, from_start=True)
    data = "\ufeffINFO one\r\nValueError: No available memory for the cache blocks.\r\n".encode("utf-16-le")
    append(path, data[:7])
    assert f.quiet(0.15)
    append(path, data[7:])
    assert f.take(2) == ["INFO one", "ValueError: No available memory for the cache blocks."]
    assert f.quiet()


def test_a_utf16_file_followed_from_its_end_skips_its_partial_line(tmp_path, start, monkeypatch):
    path = tmp_path / "vllm_log.txt"
    path.write_bytes("old 1\nhalf of an old li".encode("utf-16"))  # with its mark
    positioned = threading.Event()
    real_seek_end = follow_mod._seek_end

    def seek_end(*args):
        real_seek_end(*args)
        positioned.set()

    monkeypatch.setattr(follow_mod, "_seek_end", seek_end)
    f = start(path)
    assert positioned.wait(5)
    append(path, "ne\nnew 1\nnew 2\n".encode("utf-16-le"))
    assert f.take(2) == ["new 1", "new 2"]
    assert f.quiet()


def test_partial_line_is_held_until_its_newline(tmp_path, start):
    path = tmp_path / "vllm.log"
    path.write_text("")
    f = start(path, from_start=True)
    append(path, "INFO first half")
    assert f.quiet(0.15)
    append(path, " second half\nnext\n")
    assert f.take(2) == ["INFO first half second half", "next"]


def test_rename_and_create_rotation_reads_the_old_file_to_its_end(tmp_path, start):
    path, rotated = tmp_path / "vllm.log", tmp_path / "vllm.log.1"
    writer = open(path, "a")
    try:
        f = start(path, from_start=True)
        writer.write("a1\n")
        writer.flush()
        assert f.take(1) == ["a1"]
        writer.write("a2\n")
        writer.flush()
        os.rename(path, rotated)                # logrotate: rename ...
        writer.write("a3 written after the rename\nunfinished")
        writer.flush()                          # ... the server still writes to the old file ...
        assert f.take(2) == ["a2", "a3 written after the rename"]
        assert f.quiet()                        # "unfinished" is held while the old file may grow
        path.write_text("b1\nb2\n")             # ... create a new one, the server reopens
    finally:
        writer.close()
    assert f.take(3) == ["unfinished", "b1", "b2"]
    append(path, "b3\n")
    assert f.take(1) == ["b3"]
    assert f.quiet()


def test_copytruncate_rotation_starts_again_at_zero(tmp_path, start):
    path = tmp_path / "vllm.log"
    path.write_text("")
    f = start(path, from_start=True)
    append(path, "c1 a long first line\nc2 another long line\n")
    assert f.take(2) == ["c1 a long first line", "c2 another long line"]
    shutil.copy(path, tmp_path / "vllm.log.1")  # logrotate copytruncate: copy ...
    os.truncate(path, 0)                        # ... then truncate in place (same inode)
    append(path, "d1\n")                        # the server appends (O_APPEND) from 0
    assert f.take(1) == ["d1"]
    append(path, "d2\n")
    assert f.take(1) == ["d2"]
    assert f.quiet()


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path, start, monkeypatch):
    path = tmp_path / "later.log"
    missing = threading.Event()
    real_open = open

    def spy_open(p, *a, **k):  # know when follow() has seen the file missing at least once
        try:
            return real_open(p, *a, **k)
        except FileNotFoundError:
            missing.set()
            raise

    monkeypatch.setattr(follow_mod, "open", spy_open, raising=False)
    f = start(path)  # not from_start: still, all of a file created later is new
    assert missing.wait(5)
    path.write_text("x1\nx2\n")
    assert f.take(2) == ["x1", "x2"]


def test_a_line_over_one_mib_is_cut_and_marked(tmp_path, start):
    path = tmp_path / "vllm.log"
    path.write_text("")
    f = start(path, from_start=True)
    append(path, b"y" * (1 << 20))   # 2 MiB in two writes: the cut happens before the newline
    append(path, b"y" * (1 << 20) + b"\nafter\n")
    cut, after = f.take(2)
    assert cut == "y" * MAX_LINE + CUT_MARK.format(n=MAX_LINE)
    assert after == "after"
    append(path, "z" * (2 << 20) + "\nafter 2\n")  # complete in one read burst
    assert f.take(2) == ["z" * MAX_LINE + CUT_MARK.format(n=MAX_LINE), "after 2"]


def test_stop_ends_follow_while_waiting_for_a_missing_file(tmp_path):
    stop = threading.Event()
    gen = follow(tmp_path / "never.log", stop=stop, poll_s=0.01)
    timer = threading.Timer(0.05, stop.set)
    timer.start()
    try:
        assert list(gen) == []
    finally:
        timer.cancel()
