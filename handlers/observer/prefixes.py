"""Collector prefixes, learnt per log: what docker compose, kubectl/stern, CI gutters, journald or
a log shipper put in front of every line vLLM wrote, found and taken off before the log is read.

Nothing here lists known collectors. A line that holds one of vLLM's own record starts (its
level header ``ERROR 11-24 06:55:12``, a process prefix ``(EngineCore_DP0 pid=5)``, a traceback
line, ``[rank0]:``) somewhere after its first character shows what came in front of it (an
exception's name is no such start: a hard wrap can put it anywhere). That text is reduced to a
*shape* (digits, letters and blanks become classes; the punctuation stays), and a shape that begins enough lines of the log's sample is a prefix of
this log: it is removed from every line that begins with it, including lines that carry no
vLLM header (a traceback's source lines, wrapped parts). Prefixes stacked by several collectors
(a shipper's timestamp in front of ``vllm-1  | ``) come off one per round.

Only positions inside lines change, never line ends: line numbers stay those of the input.
A log with no learnt prefix is returned as it was given (str, bytes or a file), so a plain log
pays for one search over its sample.
"""
from __future__ import annotations

import re

from selfheal.handlers.observer.logfile import FileBytes
from selfheal.handlers.observer.normalize import clean
from selfheal.handlers.observer.spool import rewritten

#: a record as vLLM writes one: its level and time (VLLM_HEADER, vLLM's own logger), or a
#: worker's "(Name pid=N)" (Ray's and vLLM's process prefix, which other Ray programs print too)
VLLM_HEADER = re.compile(r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s*\d\d-\d\d\s*\d\d:\d\d:\d\d")
VLLM_RECORD = re.compile(VLLM_HEADER.pattern + r"|\([A-Za-z_][^()\n]{0,80}?\bpid=\d+")
#: the record starts of vLLM and Python whose position on a line tells where a prefix ends
_ANCHOR = re.compile(
    VLLM_RECORD.pattern +
    r"|Traceback \(most recent call last\)"
    r"|File \"[^\"\n]*\", line \d+"
    r"|\[rank\d+\]:"
)
#: a shape must hold one of these (a collector's separator or a number); a run of words alone
#: is more likely the start of a sentence than a prefix
_SEPARATOR = re.compile(r"[|\[\]()<>:#@/\\]|\\d")
_TOKEN = re.compile(r"(\d+)|([A-Za-z_]+)|([ \t]+)|(.)", re.S)
#: a prefix begins at least this share of the sample's non-blank lines, and this many
SHARE, AT_LEAST = 0.25, 2
#: prefixes longer than this are not a collector's
MAX_PREFIX = 120
ROUNDS = 3
SHAPES = 4
PROBE_LINES, PROBE_CHARS = 200, 1 << 18


def shape(prefix: str) -> str:
    """A regex for `prefix` and its kin: digits, letters and blank runs as classes. The blank
    run at its end matches at most one blank, so that indentation after it is kept."""
    out: list[str] = []
    for digits, letters, blanks, other in _TOKEN.findall(prefix.rstrip(" \t")):
        if digits:
            out.append(r"\d+")
        elif letters:
            out.append(r"[A-Za-z_]+")
        elif blanks:
            out.append(r"[ \t]+")
        else:
            out.append(re.escape(other))
    return "".join(out) + r"[ \t]?" if out else ""


def learn(probe: str) -> list[str]:
    """The shapes of the prefixes that begin enough of `probe`'s lines, commonest first."""
    lines = [line for line in probe.split("\n") if line.strip()]
    counts: dict[str, int] = {}
    for line in lines:
        m = _ANCHOR.search(line, 0, MAX_PREFIX + 200)
        if m and m.start() and line[:m.start()].strip():
            s = shape(line[:m.start()])
            if s and len(line[:m.start()]) <= MAX_PREFIX and _SEPARATOR.search(s):
                counts[s] = counts.get(s, 0) + 1
    if not counts:
        return []
    need = max(AT_LEAST, int(SHARE * len(lines)))
    shapes = []
    for s, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:SHAPES]:
        # a shape counts every line it begins, whether or not a vLLM record follows it there. A
        # collector prefixes every line, the first too; a shape that does not begin the first
        # line must begin most of them (what a hard wrap at a fixed width leaves at the start of
        # some lines is a piece of vLLM's header, not a prefix)
        regex = re.compile(s)
        begun = sum(1 for line in lines if regex.match(line))
        if begun >= need and (regex.match(lines[0]) or begun * 2 >= len(lines)):
            shapes.append(s)
    return shapes


def _probe(text: str | bytes | FileBytes) -> str:
    """The lines prefixes are learnt from: the first and the last PROBE_LINES whole lines within
    PROBE_CHARS of each end. Chosen by lines, so that a log gives the same probe as text, as
    bytes or as a file (a sample by offsets would not: characters are not bytes)."""
    n = len(text)
    head, tail = text[:min(n, PROBE_CHARS)], text[max(0, n - PROBE_CHARS):] if n > PROBE_CHARS else text[:0]
    head = clean(head if isinstance(head, str) else bytes(head).decode("utf-8", "replace"))
    tail = clean(tail if isinstance(tail, str) else bytes(tail).decode("utf-8", "replace"))
    lines = head.split("\n")
    if n > PROBE_CHARS:
        lines = lines[:-1]  # cut by the limit, not by a line end
    picked = lines[:PROBE_LINES]
    if tail:
        picked += tail.split("\n")[1:][-PROBE_LINES:]
    return "\n".join(picked)


def without_collectors(text: str | bytes | FileBytes, probe: str | None = None) -> str | bytes | FileBytes:
    """`text` with the collector prefixes learnt from its first and last lines (its probe,
    given or made) removed from every line (as a cleaned str, or past spool.SPOOL_OVER as a
    temporary file read like a log file), or `text` itself when none is learnt."""
    shapes = learn(_probe(text) if probe is None else probe)
    if not shapes:
        return text
    whole = text
    for _ in range(ROUNDS):
        strip = re.compile(rf"(?m)^(?:{'|'.join(shapes)})")
        whole = rewritten(whole, lambda piece, strip=strip: strip.sub("", piece))  # past SPOOL_OVER, into a file
        shapes = learn(_probe(whole))
        if not shapes:
            break
    return whole
