"""A log file is read in pieces into one reused buffer (handlers/observer/logfile.py): the results
must be exactly those of its bytes read whole, and memory must not grow with its size."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_observer_bytes import RAW, _long
from test_observer_prefilter import FRAGMENTS, ODD_RULES, TEXTS, TRAFFIC

from selfheal.handlers.observer import diagnose, logfile, logtext
from selfheal.handlers.observer.rules import builtin_ruleset
from selfheal.handlers.observer.engine import read_and_scan, scan
from selfheal.handlers.observer.logfile import FileBytes, LogFileChanged, open_log
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.paste import as_read
from selfheal.handlers.observer.prefilter import prefilter_for

MATCHERS = builtin_ruleset().matchers  # the built-in rules, compiled once

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: bytes with line ends in them, some lines empty and some long
LINES = st.lists(st.binary(max_size=40), max_size=30).map(b"\n".join)


@pytest.fixture
def small(monkeypatch):
    """Tiny buffers, blocks and pieces: every edge case of the reads on a short log."""
    monkeypatch.setattr(logfile, "READ_BYTES", 256)
    monkeypatch.setattr(logfile, "BLOCK_BYTES", 32)
    monkeypatch.setattr(logfile, "CACHED_BLOCKS", 4)
    monkeypatch.setattr(logtext, "CHUNK_CHARS", 100)


def _write(raw: bytes) -> Path:
    fd, name = tempfile.mkstemp(prefix="selfheal-log-")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    return Path(name)


def _facts(log: LogText, matchers) -> tuple:
    plan = prefilter_for(matchers).plan(log.data, log.sample)
    hits = [(h.matcher.rule.id, h.key, h.evidence, h.numbers) for h in scan(log, matchers, plan)]
    return hits, sorted(log.number(p) for p in log._cont), len(log), [(r.first, r.raw, r.text) for r in log][:50]


def _same(raw: bytes, rules=(MATCHERS, ODD_RULES.matchers)) -> None:
    path = _write(raw)
    try:
        assert msgspec.json.encode(diagnose(path)) == msgspec.json.encode(diagnose(raw))
        assert msgspec.json.encode(ODD_RULES.diagnose(path)) == msgspec.json.encode(ODD_RULES.diagnose(raw))
        for matchers in rules:
            with open_log(path) as data:
                assert isinstance(data, FileBytes)
                assert _facts(LogText(data), matchers) == _facts(LogText(raw), matchers)
            with open_log(path) as data:  # the one-read path: literals searched while lines are read
                # read as the observer reads: paste artifacts and collector prefixes off first
                assert [h.key for h in read_and_scan(data, matchers)] == [
                    h.key for h in scan(LogText(as_read(raw)), matchers)]
    finally:
        path.unlink()


@pytest.mark.parametrize("raw", RAW + [t.encode() for t in TEXTS[:6]])
def test_a_file_gives_the_results_of_its_bytes(raw, small):
    _same(raw)
    _same(_long(raw, len(raw)), rules=(MATCHERS,))


@pytest.mark.parametrize("raw", RAW[:3])
def test_a_file_with_escapes_or_carriage_returns_is_read_whole_with_the_same_results(raw, small):
    _same(raw.replace(b"\n", b"\r\n"), rules=(MATCHERS,))
    _same(_long(raw, 1).replace(b"GiB", b"\x1b[1mGiB\x1b[0m"), rules=(MATCHERS,))


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=12), max_size=40), st.binary(max_size=6),
       st.sampled_from([1, 7, 64]), st.sampled_from([8, 64, 4096]))
def test_any_file_gives_the_results_of_its_bytes(parts, junk, chunk, read):
    raw = "\n".join(parts).encode("utf-8", "surrogatepass") + junk
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logfile, "READ_BYTES", read)
        mp.setattr(logfile, "BLOCK_BYTES", max(1, read // 4))
        mp.setattr(logtext, "CHUNK_CHARS", chunk)
        mp.setattr(logtext, "SAMPLE_PIECES", 2)
        mp.setattr(logtext, "PIECE_CHARS", 48)
        _same(raw)


def test_a_line_longer_than_the_buffer(small):
    line = b"(EngineCore_DP0 pid=1) ERROR 11-24 06:55:12 [core.py:1] " + b"x" * 5000
    raw = b"\n".join([TRAFFIC[0].encode()] * 40 + [line, RAW[0], line] + [TRAFFIC[1].encode()] * 40)
    _same(raw)


@SETTINGS
@given(LINES, st.data())
def test_file_bytes_answers_as_bytes_do(raw, data):
    path = _write(raw)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(logfile, "READ_BYTES", data.draw(st.sampled_from([1, 16, 256])))
            mp.setattr(logfile, "BLOCK_BYTES", data.draw(st.sampled_from([1, 8, 64])))
            mp.setattr(logfile, "CACHED_BLOCKS", 2)
            with open_log(path) as fb:
                assert len(fb) == len(raw) and fb[:] == raw
                bound = st.none() | st.integers(-len(raw) - 3, len(raw) + 3)
                # outside and inside the window `chunks` is reading into
                pieces = fb.chunks(data.draw(st.integers(1, 40)))
                for _ in range(2):
                    for sub in (b"\n", b"a", data.draw(st.binary(min_size=1, max_size=3))):
                        a, b = data.draw(bound), data.draw(bound)
                        assert fb.find(sub, a, b) == raw.find(sub, a, b)
                        assert fb[a:b] == raw[a:b]
                        if len(sub) == 1:
                            assert fb.rfind(sub, a, b) == raw.rfind(sub, a, b)
                            assert fb.count(sub, a, b) == raw.count(sub, a, b)
                    next(pieces, None)
                pieces.close()
    finally:
        path.unlink()


@SETTINGS
@given(LINES, st.integers(1, 50),
       st.sampled_from([1, 16, 256]))
def test_pieces_cover_the_file_and_hold_what_is_looked_at(raw, size, read):
    path = _write(raw)
    try:
        with pytest.MonkeyPatch.context() as mp, open_log(path) as fb:
            mp.setattr(logfile, "READ_BYTES", read)
            at = 0
            for buf, base, a, b in fb.chunks(size):
                assert base + a == at and buf[a:b] == raw[at:base + b]
                assert base + b == len(raw) or (raw[base + b:base + b + 1] == b"\n" and base + b >= at + size)
                above = raw.rfind(b"\n", 0, at) + 1 if at else 0
                assert base <= above  # the line above the piece is held, and the byte at b
                assert bytes(buf[above - base:min(b + 1, len(raw) - base)]) == raw[above:base + b + 1]
                at = base + b
            assert at == len(raw)
    finally:
        path.unlink()


def test_a_file_that_shrinks_while_it_is_read_is_refused(tmp_path):
    path = tmp_path / "vllm.log"
    path.write_bytes(_long(RAW[0], 5))
    with open_log(path) as data:
        os.truncate(path, len(data) // 2)  # rotated with copytruncate
        with pytest.raises(LogFileChanged, match=f"{path}: the file shrank while it was read"):
            LogText(data)


def test_a_file_that_grows_while_it_is_read_is_read_as_it_was(tmp_path):
    path = tmp_path / "vllm.log"
    raw = _long(RAW[0], 6)
    path.write_bytes(raw)
    oom = b"\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"
    with open_log(path) as data:
        with open(path, "ab") as f:  # a running server appends meanwhile
            f.write(oom * 100)
        assert [h.key for h in read_and_scan(data, MATCHERS)] == [h.key for h in scan(LogText(raw), MATCHERS)]


def test_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(IsADirectoryError):
        open_log(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # a pipe (`selfheal diagnose <(zcat vllm.log.gz)`) cannot be read twice: it is read whole, once
    writer = subprocess.Popen([sys.executable, "-c", f"open({str(fifo)!r}, 'wb').write(open({str(_write(RAW[0]))!r}, 'rb').read())"])
    try:
        assert open_log(fifo) == RAW[0]
    finally:
        assert writer.wait(timeout=30) == 0


def test_memory_does_not_grow_with_the_log(tmp_path):
    path = tmp_path / "vllm.log"
    rnd = random.Random(7)
    lines = [TRAFFIC[rnd.randrange(2)] for _ in range(200_000)]
    lines[150_000:150_000] = RAW[0].decode("utf-8", "replace").splitlines()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        from_file = diagnose(path)
        _, file_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        whole = diagnose(path.read_bytes())
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert from_file.primary is not None and msgspec.json.encode(from_file) == msgspec.json.encode(whole)
    assert whole_peak > size  # the measure sees a whole read
    # the read buffer, the block cache and the records looked at, whatever the size
    assert file_peak < logfile.READ_BYTES + logfile.CACHED_BLOCKS * logfile.BLOCK_BYTES + (2 << 20), (file_peak, size)
