"""Rules bound to a cap the log's own arguments set.

The rule of a queue held by the sequence cap (`vllm.log.queue_at_sequence_cap`, 45_log_runtime.toml)
selects its stats lines by a literal: "Running: 256 reqs", vLLM's default max_num_seqs (and 1024,
the default of large cards). A server started with `--max-num-seqs 64` pins its running count at
64, which that literal never selects: a benchmark sweep's or a tuned server's queue went unread.
A literal for every stats line would cost the whole log a scan (a stats line is printed every few
seconds), so the cap is read from the log's head instead, where vLLM prints its arguments
("non-default args: {... 'max_num_seqs': 64}", "Namespace(... max_num_seqs=64 ...)", or the
command line a person pasted), and the rule is bound to it: the same rule, its literal and its
running count at that cap.

Its literal ("Running: 64 reqs") rides the regex scan the plan already makes for "Running": only
the stats lines at the cap cost a step more, and a log that configures no cap, or vLLM's default,
is read with the built-in rules alone. A cap set on purpose is held for SUSTAIN stats lines in a
row before the queue is its finding.
"""
from __future__ import annotations

import functools
import re

import msgspec

from selfheal.handlers.observer.engine import Matcher

__all__ = ["HEAD_CHARS", "configured_matchers"]

#: where a log's arguments are looked for: its first characters (vLLM prints them at startup)
HEAD_CHARS = 1 << 16
#: at most this many distinct caps are bound (a log of several starts, a sweep's)
MAX_CAPS = 4
#: the rule bound; the caps that rules of its kind name in their literals (vLLM's defaults, 256 and
#: 1024) are read by those rules and left alone
TEMPLATE = "vllm.log.queue_at_sequence_cap"
_NAMED_CAP = re.compile(r"Running: (\d+) reqs")
#: stats lines at a configured cap in a row (at most the rule's `gap` apart) before the queue is
#: held there: a cap set on purpose (a benchmark sweep's) absorbs a burst for a stats interval or
#: two and drains, which is the setting doing its work (a look-alike of the corpus, 3551)
SUSTAIN = 3
_CAP = re.compile(r"""max[_-]num[_-]seqs['"]?\s*[:=]?\s*(\d{1,6})(?!\d)""")


def configured_matchers(text, matchers: tuple[Matcher, ...]) -> tuple[Matcher, ...]:
    """Matchers of the queue rule bound to each max_num_seqs the head of `text` (a str, bytes or
    logfile.FileBytes) configures, other than those its rules name already (vLLM's defaults); ()
    when it configures none."""
    head = text[:HEAD_CHARS]
    if not isinstance(head, str):
        head = bytes(head).decode("utf-8", "replace")
    caps = sorted({int(m.group(1)) for m in _CAP.finditer(head)} - _named_caps(matchers) - {0})[:MAX_CAPS]
    return _bound(matchers, tuple(caps)) if caps else ()


@functools.lru_cache(maxsize=16)
def _named_caps(matchers: tuple[Matcher, ...]) -> frozenset[int]:
    template = next((m for m in matchers if m.rule.id == TEMPLATE), None)
    return frozenset(int(c) for m in matchers if template is not None and m.rule.kind == template.rule.kind
                     for c in _NAMED_CAP.findall(m.literal))


@functools.lru_cache(maxsize=32)
def _bound(matchers: tuple[Matcher, ...], caps: tuple[int, ...]) -> tuple[Matcher, ...]:
    base = next((m for m in matchers if m.rule.id == TEMPLATE), None)
    if base is None:  # a rule set without the rule: nothing to bind
        return ()
    named = _NAMED_CAP.search(base.literal)
    if named is None:  # a rule whose literal names no cap
        return ()
    running = f"(?P<running>{named.group(1)})"
    out = []
    for cap in caps:
        patterns = tuple(p.replace(running, f"(?P<running>{cap})") for p in base.rule.patterns)
        if patterns == base.rule.patterns:  # a rule that does not name its cap as its running count
            return ()
        rule = msgspec.structs.replace(base.rule, prefilter=f"Running: {cap} reqs", patterns=patterns,
                                       sustain=max(base.rule.sustain, SUSTAIN))
        out.append(Matcher(rule, base.order))
    return tuple(out)
