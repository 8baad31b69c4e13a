"""A log given as bytes is scanned as bytes and only the lines that matter are decoded; the
results must be exactly those of the same bytes decoded as UTF-8 with U+FFFD (read_input)."""
from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_observer_prefilter import ODD_RULES, TEXTS, TRAFFIC

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer.engine import scan
from selfheal.handlers.observer.logtext import CHUNK_CHARS, LogText
from selfheal.handlers.observer.prefilter import prefilter_for
from selfheal.handlers.observer.rules import builtin_ruleset

MATCHERS = builtin_ruleset().matchers  # the built-in rules, compiled once

SAMPLES = Path(__file__).parent / "samples"
RAW = [p.read_bytes() for p in sorted(SAMPLES.glob("*.log")) + sorted((SAMPLES / "real").glob("*.log"))]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(raw: bytes, odd: bool = True) -> None:
    text = raw.decode("utf-8", "replace")
    assert msgspec.json.encode(diagnose(raw)) == msgspec.json.encode(diagnose(text))
    # the odd rules (a literal " " is in every line) only on short logs: they make every line a candidate
    for matchers, anchors in ((MATCHERS, (None,)), (ODD_RULES.matchers, (None, True) if odd else ())):
        for anchored in anchors:
            got = []
            for log in (LogText(raw), LogText(text)):
                plan = prefilter_for(matchers).plan(log.data, log.sample, anchored=anchored)
                got.append(([(h.matcher.rule.id, h.key, h.evidence, h.numbers) for h in scan(log, matchers, plan)],
                            sorted(log.number(p) for p in log._cont), len(log)))
            assert got[0] == got[1]


def _long(body: bytes, seed: int) -> bytes:
    """`body` spliced into traffic long enough for learnt headers and many chunks."""
    rnd = random.Random(seed)
    traffic = [t.encode() for t in TRAFFIC]
    lines = [traffic[i % 2] for i in range(3 * CHUNK_CHARS // 60)]
    for _ in range(3):
        lines.insert(rnd.randrange(len(lines)), body)
    return b"\n".join(lines)


@pytest.mark.parametrize("raw", RAW + [t.encode() for t in TEXTS[:4]])
def test_bytes_give_the_results_of_the_decoded_text(raw):
    _same(raw)
    _same(raw.replace(b"\n", b"\r\n"))
    _same(_long(raw, len(raw)), odd=False)


@pytest.mark.parametrize("damage", [b"\xe2\x82", b"\xff", b"\xed\xa0\x80", b"\x00", b"\xe2\x96\x88", b"\xef\xbf\xbd",
                                    b"\x1b[31m", b"\r", b"\x1c", b"\xc2\x85", b"\xe2\x80\xa8"])
def test_damaged_bytes_give_the_results_of_the_decoded_text(damage):
    for raw in RAW[:2]:
        rnd = random.Random(len(raw))
        cut = bytearray(raw)
        for _ in range(12):
            at = rnd.randrange(len(cut))
            cut[at:at] = damage
        _same(bytes(cut))
        _same(_long(bytes(cut), 1), odd=False)
        # a character cut by a chunk boundary, an escape joining bytes decoding keeps apart
        _same(b"\xe2" + _long(raw, 2).replace(b"memory", b"mem\xe2\x1b[0m\x82\xacory \xe2\x96\x88\n\xe2\x96"), odd=False)


@SETTINGS
@given(st.lists(st.sampled_from([*TRAFFIC, "", "  x", "\xe2", "█", "File \"a.py\", line 3", "ValueError: x",
                                  "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                                  "(EngineCore_DP0 pid=5) ERROR 11-24 06:55:12 [core.py:708] wrapped at",
                                  "a memory for the cache blocks. Try increasing", "\x1c", "\x85"]),
                min_size=1, max_size=60),
       st.binary(max_size=8), st.integers(0, 200))
def test_random_logs_as_bytes(lines, junk, repeat):
    raw = "\n".join(lines).encode("utf-8", "surrogatepass") + junk
    _same(raw)
    _same(raw + b"\n" + b"\n".join(t.encode() for t in TRAFFIC) * repeat, odd=False)


def test_a_long_log_given_as_bytes_is_never_decoded_whole():
    # the point of the bytes path: without escapes, only the lines the observer looks at are decoded
    raw = _long(RAW[0], 3)
    assert b"\x1b" not in raw
    log = LogText(raw)
    hits = scan(log, MATCHERS, prefilter_for(MATCHERS).plan(log.data, log.sample))
    assert log.binary and hits and log._text is None
