"""What a paste did to a log, undone before the log is read.

vLLM writes plain ASCII lines. On their way to a person they pick up artifacts that no rule
should have to know about, each of them a mechanism, none of them one log's wording:

- **look-alike characters**: a web page or a chat client turns spaces into no-break or thin
  spaces, quotes into curly quotes, "..." into an ellipsis, and a Chinese input method types
  full-width brackets and colons (U+FF08 for "("); zero-width characters ride along unseen.
  Each is mapped to the ASCII character vLLM printed (the compatibility forms of Unicode's
  NFKC, plus the quotes and dashes NFKC keeps);
- **HTML entities** from a scraped page: ``&quot;``, ``&#39;``, ``&gt;``;
- **ANSI colours that lost their ESC**: ``[1;36m(EngineCore_DP0 pid=7)[0;0m``, as a page keeps
  vLLM's coloured process prefix, or ``^[[0;36m`` as a viewer shows it, come off;
- **HTML line breaks**: a log put in a Markdown table's cell (a table's row is one line, so its
  lines are joined with ``<br>``), or scraped from a page, becomes its lines again;
- **Markdown bold** that a person put around a figure or a phrase of the log they retell
  (``Available KV cache memory: **-0.93 GiB**``): a pair of ``**`` by Markdown's flanking
  rules (the first before a non-blank and after no word character, the second after a
  non-blank and before no word character, on one line) is taken off. ``**kwargs`` and ``a**2``
  form no pair; ``__`` is left alone, since Python's ``__init__`` would form one;
- **log lines inside JSON**: docker's json-file driver (``{"log": "...\\n", "stream": ...}``),
  Kubernetes and cloud log exports (``message``, ``msg``, ``textPayload``, ``jsonPayload``):
  each such line is replaced by the text it carries, whose ``\\n`` become lines again;
- **escaped newlines**: a traceback kept as one JSON or repr string (``Traceback (most recent
  call last):\\n  File \\"...``) is split back into its lines where the pieces start like log
  records, so that a prompt that merely holds a ``\\n`` is left alone;
- **double spacing**: a paste that put a blank line after every line (some web editors do), so
  that wrapped records can be joined again;
- **newest first**: a log viewer (RunPod's console, Grafana, Cloud Logging) lists the newest
  record at the top; where the probe's timestamps mostly go back in time, the records (a line
  with a timestamp and the lines after it that have none) are put back in the order they were
  written, so that what came before a failure (a capture phase, a block count) is read as before;
- **gutters** every line shares: a Markdown quote ``> ``, ``| ``, a box-drawing bar, a bullet,
  a pastebin's line numbers and ``cat -n``'s, or the indentation of a block indented as a whole
  (a Markdown code block, a list item), which carry no vLLM record start for the collector
  learner (prefixes.py) to learn from, and under which a traceback's own indentation would read
  as continued lines.

What the log shows is decided from the same probe as the collector prefixes (its first and last
lines), so a plain log, which is what a live vLLM writes, pays for a few searches of that probe
and is returned as it was given (str, bytes or file). A log that shows an artifact is decoded
and rewritten as str, or, past spool.SPOOL_OVER, a piece at a time into a temporary file
(a docker json-file log of hundreds of megabytes is never held whole). Look-alikes, entities and gutters keep
every line end, so line numbers stay those of the input; lines taken out of JSON or escaped
newlines, and dropped double spacing, number the lines of the text as it was unpasted.
"""
from __future__ import annotations

import html
import re

from selfheal.handlers.observer import spool
from selfheal.handlers.observer.carried import has_escaped, is_json_log, out_of_json, unescaped
from selfheal.handlers.observer.logfile import FileBytes
from selfheal.handlers.observer.normalize import has_lookalikes, without_lookalikes
from selfheal.handlers.observer.prefixes import _ANCHOR, _probe, shape, without_collectors

# -- HTML entities ---------------------------------------------------------------------------
_ENTITY = re.compile(r"&(?:quot|apos|amp|lt|gt|nbsp|#\d{1,6}|#[xX][0-9a-fA-F]{1,6});")

# -- ANSI colours without their ESC ----------------------------------------------------------
#: vLLM colours its process prefix ("\x1b[1;36m(EngineCore_DP0 pid=7)\x1b[0;0m"); a page or a chat
#: client drops the invisible ESC and leaves "[1;36m" and "[0;0m" in the text, a viewer shows it as
#: "^[", and a script's echo spells it "\033[" or "\x1b[". A log is taken to show them from this
#: many in its probe (which holds no real ESC: the probe is read cleaned)
_RESIDUE = re.compile(r"(?:\^\[|\\(?:x1[bB]|033|u001[bB]|e))?\[\d{1,3}(?:;\d{1,3}){0,4}m")
RESIDUE_AT_LEAST = 2

# -- HTML line breaks ------------------------------------------------------------------------
#: a log put in a Markdown table's cell, or scraped from a page, has its line ends as `<br>`;
#: a log is taken to show them from this many in its probe
_BREAK = re.compile(r"<[Bb][Rr][ \t]*/?>(?:\r?\n)?")
BREAKS_AT_LEAST = 2

# -- Markdown bold ----------------------------------------------------------------------------
_BOLD = re.compile(r"(?<![\w*])\*\*(?=[^\s*])([^\n*]{0,300}?[^\s*])\*\*(?![\w*])")

# -- double spacing --------------------------------------------------------------------------
#: a paste is double spaced when it has this many non-blank lines, none of them next to another
DOUBLE_AT_LEAST = 3

# -- newest first ---------------------------------------------------------------------------
#: timestamps of one spelling are compared with each other: ISO dates with times, vLLM's
#: "MM-DD HH:MM:SS", and a bare time of day
_STAMPS = re.compile(r"(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?)"
                     r"|(?P<vllm>(?<![\d-])\d\d-\d\d \d\d:\d\d:\d\d)"
                     r"|(?P<clock>(?<![\d:])\d\d:\d\d:\d\d(?:[.,]\d+)?)")
#: what every one of those holds, searched first: most lines of a serving log (its access lines)
#: have no timestamp, and a search for a literal ":" is ten times cheaper than `_STAMPS`'s
_CLOCK = re.compile(r":\d\d:")
#: newest first when at least this many neighbouring timestamps go back, this many times as
#: many as go forward
BACKWARDS_AT_LEAST, BACKWARDS_RATIO = 3, 4


# -- gutters ---------------------------------------------------------------------------------
#: `cat -n` and `nl` number lines right-aligned in six columns, then a tab: the blanks before the
#: number shrink as it grows, so the gutter is learnt without them (and first: a numbered line of
#: a table, "    24\t| a |", is numbered before it is a bar)
_NUMBERED = re.compile(r"[ ]{0,7}\d{1,7}\t")
_GUTTER = re.compile(
    _NUMBERED.pattern + r"|[ \t]{0,4}(?:(?:>[ \t]?)+|[|\u2502\u2503\u258e\u258c][ \t]?|[-*\u2022][ \t]"
    r"|\d{1,6}[ \t]*[|\u2502][ \t]?|\d{1,6}:[ \t]+(?=\S))")
#: a gutter is one that this share of the non-blank lines begin with, at least this many
GUTTER_SHARE, GUTTER_AT_LEAST = 0.9, 3
#: a collector's prefix on lines that hold no vLLM record start (a pydantic error's lines, a
#: wrapped message): the text up to a collector's separator (" | ", a tab, "] ", syslog's and
#: journald's "prog[pid]: ", "> "), or a shipper's ISO 8601 time (docker logs -t, kubectl
#: --timestamps), of the same shape on the lines
_SEPARATED = re.compile(r"[^\n]{0,60}?(?:[ \t]\|[ \t]|\t|\]:?[ \t]|>[ \t])"
                        r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[\d.,]*(?:Z|[+-]\d\d:?\d\d)?[ \t]"
                        r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d[ \t]")


def as_read(text: str | bytes | FileBytes) -> str | bytes | FileBytes:
    """What the observer reads of `text`: its paste artifacts undone, then its collector
    prefixes taken off (prefixes.py), both decided from one probe where the paste had none."""
    probe = _probe(text)
    plain = unpasted(text, probe)
    return without_collectors(plain, probe if plain is text else None)


def unpasted_str(text: str) -> str:
    """`unpasted` of a short text, as a str whatever the size it is spooled over."""
    out = unpasted(text)
    return out if isinstance(out, str) else bytes(out[:]).decode("utf-8", "replace")


def unpasted(text: str | bytes | FileBytes, probe: str | None = None) -> str | bytes | FileBytes:
    """`text` with the paste artifacts its probe (`_probe(text)`, given or made) shows undone,
    as a cleaned str (past spool.SPOOL_OVER, a temporary file read like a log file), or `text`
    itself when it shows none."""
    probe = _probe(text) if probe is None else probe
    if not any(test(probe) for test, _ in _STEPS):
        return text
    whole = text
    for test, step in _STEPS:  # each decided on what the steps before it left
        found = test(_probe(whole))
        # a log too long to hold whole is rewritten a piece at a time (spool.py): only the steps
        # that read one line at a time apply to it; a paste long enough to be double spaced or
        # listed newest first is far shorter than SPOOL_OVER
        if found and (step not in _WHOLE_TEXT_STEPS or len(whole) <= spool.SPOOL_OVER):
            whole = spool.rewritten(whole, lambda piece, step=step, found=found: step(piece, found))
    return whole if whole is not text else spool.rewritten(text, lambda piece: piece)


def _has_entities(probe: str) -> bool:
    return "&" in probe and _ENTITY.search(probe) is not None


def _without_entities(text: str) -> str:
    return _ENTITY.sub(lambda m: html.unescape(m.group()), text)


def _has_residue(probe: str) -> bool:
    return len(_RESIDUE.findall(probe)) >= RESIDUE_AT_LEAST


def _without_residue(text: str) -> str:
    return _RESIDUE.sub("", text)


def _has_breaks(probe: str) -> bool:
    return "<" in probe and len(_BREAK.findall(probe, 0)) >= BREAKS_AT_LEAST


def _without_breaks(text: str) -> str:
    return _BREAK.sub("\n", text)


def _has_bold(probe: str) -> bool:
    return "**" in probe and _BOLD.search(probe) is not None


def _without_bold(text: str) -> str:
    return _BOLD.sub(r"\1", text)


def _is_double_spaced(probe: str) -> bool:
    if "\n\n" not in probe:
        return False
    lines = probe.strip("\n").split("\n")
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if len(filled) < DOUBLE_AT_LEAST:
        return False
    gaps = [b - a for a, b in zip(filled, filled[1:])]
    # a blank line after every line makes every distance between filled lines even
    return all(g % 2 == 0 for g in gaps)


def _single_spaced(text: str) -> str:
    """Each run of blank lines between two lines loses one blank and then half of the rest: the
    paste added one after every line, a blank line of the log became three."""
    out: list[str] = []
    blanks: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            out.extend(blanks[:(len(blanks) - 1) // 2] if out else blanks)
            blanks = []
            out.append(line)
        else:
            blanks.append(line)
    out.extend(blanks)
    return "\n".join(out)


def _stamps(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line index, spelling, timestamp) of the first timestamp on each line that has one."""
    out = []
    for i, line in enumerate(lines):
        m = _STAMPS.search(line) if _CLOCK.search(line) else None
        if m:
            # a stamp that starts the line (a viewer's, a shipper's) is another clock than one
            # inside it (vLLM's own, often in another zone)
            out.append((i, f"{m.lastgroup}{m.start() == 0}", m.group().replace("T", " ").replace(",", ".")))
    return out


def _is_newest_first(probe: str) -> bool:
    last: dict[str, str] = {}
    back = forward = 0
    for _, spelling, stamp in _stamps(probe.split("\n")):
        before = last.get(spelling)
        if before is not None and stamp != before:
            back, forward = (back + 1, forward) if stamp < before else (back, forward + 1)
        last[spelling] = stamp
    # fewer steps back are as likely two logs pasted together, or an excerpt put before its context
    return back >= BACKWARDS_AT_LEAST and back >= BACKWARDS_RATIO * forward


def _oldest_first(text: str) -> str:
    lines = text.split("\n")
    starts = [i for i, _, _ in _stamps(lines)]
    records = [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]
    return "\n".join(lines[:starts[0]] + [line for record in reversed(records) for line in record])


def _commonest(probe: str, key_of) -> re.Pattern | None:
    """The regex `key_of(line)` gives for nearly every non-blank line of the probe, or None."""
    lines = [line for line in probe.split("\n") if line.strip()]
    if len(lines) < GUTTER_AT_LEAST:
        return None
    counts: dict[str, int] = {}
    misses = 0
    for line in lines:
        key = key_of(line)
        if key:
            counts[key] = counts.get(key, 0) + 1
        else:  # no key can be on enough lines any more: a plain log's probe stops here early
            misses += 1
            if len(lines) - misses < GUTTER_SHARE * len(lines):
                return None
    if not counts:
        return None
    key, n = max(counts.items(), key=lambda kv: kv[1])
    return re.compile(key) if n >= GUTTER_SHARE * len(lines) else None


def _gutter_of(line: str) -> str | None:
    """The gutter `line` begins with, as a regex of that literal text (line numbers as digits)."""
    m = _GUTTER.match(line)
    if not m:
        return None
    gutter = m.group()
    if _NUMBERED.fullmatch(gutter):
        return r"[ ]{0,7}\d{1,7}\t"
    # the blank after a quote or a bar is optional (an empty quoted line is the gutter alone);
    # after a bullet it is what makes it one ("-1.05GiB" is a number)
    bare = gutter.rstrip(" \t")
    blank = "" if bare[-1:] in "-*\u2022" else "[ \t]?"
    return re.sub(r"\d+", r"\\d+", re.escape(gutter if not blank else bare)) + blank


#: a block indented as a whole (a Markdown code block, a list item's paste, a quote in an email):
#: the blanks every non-blank line of the probe begins with, at least this many (or a tab)
INDENT_AT_LEAST = 2


def _common_indent(probe: str) -> re.Pattern | None:
    """The indentation every non-blank line of the probe shares, as a regex; None where a line
    begins at its first column. A traceback keeps its own indentation under it."""
    lines = [line for line in probe.split("\n") if line.strip()]
    if len(lines) < GUTTER_AT_LEAST:
        return None
    common = min(len(line) - len(line.lstrip(" \t")) for line in lines)
    first = lines[0][:common]
    if common < INDENT_AT_LEAST and "\t" not in first:
        return None
    if any(not line.startswith(first) for line in lines):  # tabs here, spaces there
        return None
    return re.compile(re.escape(first))


def _collector_of(line: str) -> str | None:
    """The shape of the text before a collector's separator on `line`, unless that text is
    vLLM's own header (which the collector learner and the header rules read)."""
    m = _SEPARATED.match(line)
    return shape(m.group()) if m and m.group().strip() and not _ANCHOR.search(m.group()) else None


def _strip(text: str, prefix: re.Pattern) -> str:
    """`text` with `prefix` taken off every line that begins with it."""
    return re.sub(rf"(?m)^{prefix.pattern}", "", text)


def _stripper(key_of):
    """(the prefix every line of a probe begins with, as a regex; taking it off every line)."""
    return lambda probe: _commonest(probe, key_of), _strip


def _always(step):
    """A step that needs nothing of its test but that it said yes."""
    return lambda text, _found: step(text)


_UNDOUBLED, _REORDERED = _always(_single_spaced), _always(_oldest_first)
#: the steps that need the whole text, not one line at a time
_WHOLE_TEXT_STEPS = (_UNDOUBLED, _REORDERED)

#: (what the probe shows, or None; how the text is undone, given what was shown), in order
_STEPS = (
    (has_lookalikes, _always(without_lookalikes)),
    (_has_entities, _always(_without_entities)),
    (_has_residue, _always(_without_residue)),
    (_has_bold, _always(_without_bold)),
    (is_json_log, _always(out_of_json)),
    (has_escaped, _always(unescaped)),
    # after the JSON steps: a <br> inside a JSON log's line is the text it carries, not its line end
    (_has_breaks, _always(_without_breaks)),
    (_is_double_spaced, _UNDOUBLED),
    # gutters carry no vLLM record start for the collector learner (prefixes.py) to learn from;
    # a second round for one inside another (a pastebin's or cat -n's numbers on a quoted log)
    _stripper(_gutter_of),
    _stripper(_gutter_of),
    (_common_indent, _strip),
    _stripper(_collector_of),
    # after the prefixes: a viewer's timestamp is told from the log's own by starting its line,
    # which it does once a collector's prefix in front of both is gone
    (_is_newest_first, _REORDERED),
)
