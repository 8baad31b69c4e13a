"""Log lines carried inside other text, taken out of it (a step of paste.py's):

- **log lines inside JSON**: docker's json-file driver (``{"log": "...\\n", "stream": ...}``),
  Kubernetes and cloud log exports (``message``, ``msg``, ``textPayload``, ``jsonPayload``):
  each such line is replaced by the text it carries;
- **escaped newlines**: a traceback kept as one JSON or repr string is split back into its lines
  where the pieces start like log records, so that a prompt that merely holds a ``\\n`` is left
  alone.
"""
from __future__ import annotations

import json
import re

from selfheal.handlers.observer.normalize import clean, without_lookalikes
from selfheal.handlers.observer.prefixes import _ANCHOR

__all__ = ["has_escaped", "is_json_log", "out_of_json", "unescaped"]

#: the fields that carry a log line, in the collectors' spellings; the first one present wins
_FIELDS = ("log", "message", "msg", "MESSAGE", "textPayload", "line", "text", "body", "content")
#: objects whose fields are looked into too (GCP's jsonPayload, Elastic's _source, ...)
_NESTED = ("jsonPayload", "_source", "fields", "payload", "data", "record")
#: a log is in JSON when at least this share of the probe's non-blank lines carries a log line
JSON_SHARE = 0.5

#: a line is split at its escaped newlines only where it holds this many and one of the pieces
#: starts like a log record; two where the line is itself a vLLM record (a request's prompt,
#: logged with its "\n", stays one line)
ESCAPED_AT_LEAST = 2
_ESCAPED = re.compile(r"(?<!\\)(?:\\r)?\\n")
_RECORD_START = re.compile(
    rf"\s*(?:{_ANCHOR.pattern}|(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception):|raise\b|\^)")
#: a character no file or encoder can hold: a lone surrogate, escaped in a JSON string as \\udXXX
_SURROGATE = re.compile("[\ud800-\udfff]")


def _carried(line: str) -> str | None:
    """The log text a JSON log line carries, or None when it is no such line."""
    obj = _json_of(line, "{", "}")
    if not isinstance(obj, dict):
        return None
    for holder in (obj, *(obj[k] for k in _NESTED if isinstance(obj.get(k), dict))):
        for field in _FIELDS:
            if isinstance(holder.get(field), str):
                return _sound(holder[field])
    return None


def _json_of(line: str, opener: str, closer: str):
    """The JSON value a whole line is, when it opens and closes so; None when it is none."""
    s = line.strip()
    if len(s) < 2 or s[0] != opener or s[-1] != closer:
        return None
    try:
        return json.loads(s)
    except ValueError:
        return None


def _sound(text: str) -> str:
    """`text` with a lone surrogate (escaped in the JSON as \\udXXX, a character that no file or
    encoder can hold) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def is_json_log(probe: str) -> bool:
    if "{" not in probe:
        return False
    lines = [line for line in probe.split("\n") if line.strip()]
    carried = sum(1 for line in lines if line.lstrip().startswith("{") and _carried(line) is not None)
    return bool(lines) and carried >= JSON_SHARE * len(lines)


def out_of_json(text: str) -> str:
    out = []
    for line in text.split("\n"):
        got = _carried(line) if line.lstrip().startswith("{") else None
        out.append(line if got is None else clean(got[:-1] if got.endswith("\n") else got))
    return "\n".join(out)


def _starts_a_record(piece: str) -> bool:
    """A piece that starts like a log record, or holds vLLM's record start behind a collector's
    prefix (a timestamp and a bar, a container's name)."""
    return _RECORD_START.match(piece) is not None or _ANCHOR.search(piece, 0, 200) is not None


def _split_escaped(line: str) -> str:
    if line.count("\\n") < ESCAPED_AT_LEAST:
        return line
    whole = _json_string(line)
    if whole is not None:
        return without_lookalikes(clean(whole))
    pieces = [p.replace('\\"', '"').replace("\\t", "    ").replace("\\'", "'") for p in _ESCAPED.split(line)]
    own = _ANCHOR.match(line) is not None or _ANCHOR.match(line, line.find(")") + 1 if line.startswith("(") else 0)
    # the first piece is where the string began: after a JSON key or a quote, anywhere on the line
    starts = sum(1 for p in pieces[1:] if _starts_a_record(p))
    if own and starts < 2 or not own and starts + (_RECORD_START.search(pieces[0]) is not None) < 1:
        return line
    return "\n".join(pieces)


def _json_string(line: str) -> str | None:
    """What a line that is one JSON string literal as a whole (a log kept as an API's error
    field, a notebook's output) says, decoded as JSON decodes it, or None for any other line:
    such a line is read whatever its pieces start with, prose as well as records."""
    got = _json_of(line, '"', '"')
    return _sound(got) if isinstance(got, str) else None


def has_escaped(probe: str) -> bool:
    return "\\n" in probe and any(_split_escaped(line) is not line for line in probe.split("\n") if "\\n" in line)


def unescaped(text: str) -> str:
    return "\n".join(_split_escaped(line) if "\\n" in line else line for line in text.split("\n"))
