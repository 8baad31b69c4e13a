"""A long log whose every line is rewritten (a docker json-file log, a compose log) is rewritten a
piece at a time into a temporary file (spool.py), and read as if it had been rewritten whole."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose, paste, spool
from selfheal.handlers.observer.prefixes import _probe

SAMPLES = Path(__file__).parent / "samples"
STATS = ("INFO 09-04 05:36:31 [loggers.py:123] Engine 000: Avg prompt throughput: 1708.0 tokens/s, Avg "
         "generation throughput: 646.0 tokens/s, Running: 25 reqs, Waiting: 0 reqs, GPU KV cache usage: 12.6%\n")
FAILURE = ("ERROR 09-04 05:40:00 [core.py:700] ValueError: To serve at least one request with the models's max seq "
           "len (32768), (4.00 GiB KV cache is needed, which is larger than the available KV cache memory (2.50 GiB). "
           "Based on the available memory, the estimated maximum model length is 20480. Try increasing "
           "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.\n")


def _found(d):
    return [(f.kind, f.rule, f.numbers, f.fix, f.line, f.confidence) for f in d.findings]


def _needs_the_whole_text(text: str) -> bool:
    probe = _probe(text)
    return paste._is_double_spaced(probe) or paste._is_newest_first(probe)


def test_every_sample_reads_alike_rewritten_in_pieces(monkeypatch):
    logs = {p: p.read_bytes() for p in sorted(SAMPLES.rglob("*.log"))}
    whole = {p: _found(diagnose(text)) for p, text in logs.items()}
    # every log spooled, in pieces of 97 bytes: lines and UTF-8 sequences cut everywhere
    monkeypatch.setattr(spool, "SPOOL_OVER", 0)
    monkeypatch.setattr(spool, "PIECE", 97)
    differ = [p for p, text in logs.items() if _found(diagnose(text)) != whole[p]]
    # a double-spaced or newest-first paste needs its whole text; spooled, it is read as written
    assert all(_needs_the_whole_text(logs[p].decode("utf-8", "replace")) for p in differ), differ
    assert len(differ) <= len(logs) // 50 and len(logs) > 400  # the pastes of that shape stay few (12 of 668)


def _write(path: Path, line_of, failure_at: int, lines: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(line_of(STATS))
            if i == failure_at:
                f.write(line_of(FAILURE))


@pytest.mark.parametrize("shape", ["docker json-file", "docker compose"])
def test_a_long_rewritten_log_is_never_held_whole(tmp_path, shape):
    line_of = {"docker json-file": lambda line: json.dumps({"log": line, "stream": "stdout",
                                                             "time": "2025-09-04T05:36:31.123456789Z"}) + "\n",
               "docker compose": lambda line: "vllm-1  | " + line}[shape]
    log = tmp_path / "vllm.log"
    _write(log, line_of, failure_at=70_000, lines=100_000)
    assert log.stat().st_size > 2 * spool.SPOOL_OVER
    tracemalloc.start()
    try:
        d = diagnose(log)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (d.primary.kind, d.primary.line) == ("max_model_len_exceeds_kv_cache", 70_002)
    assert peak < log.stat().st_size / 3, f"{peak} bytes at the peak for a {log.stat().st_size}-byte log"
