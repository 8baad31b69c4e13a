"""Secrets never enter the log: credentials are replaced by a keyed token before anything is
recorded (issue 19). Pure: no I/O, no clock; the same key and input give the same output.

vLLM releases before August 2026 print every non-default argument at startup, older ones the
whole argparse Namespace, so a server started with `--api-key` or `--hf-token` writes the
secret into the very log selfheal turns into incidents:

    (APIServer pid=1) INFO 10-06 15:56:26 [utils.py:233] non-default args: {'model_tag': 'm',
        'api_key': ['sk-...'], 'max_model_len': 65536, ...}
    INFO 04-20 20:39:58 api_server.py:150] args: Namespace(host='0.0.0.0', ..., api_key='...', ...)

A secret becomes `[redacted:XXXXXXXX]`, X the first 8 hex digits of HMAC-SHA256(key, secret):
one secret under one key is always the same token (two incidents can be compared without the
secret), another key gives another token, and a token is never redacted again
(`text(text(x)) == text(x)`). Only the secret goes: the flag, the dict key, the variable name,
the quotes and every number around it stay, so `'max_model_len': 8192` still reads as it did.

The rule for names (flags, dict and Namespace keys, environment variables, headers; any case,
camelCase split, `-` and `.` read as `_`; see `is_secret_name`). A name is secret when one of its
words contains `key`, `token`, `secret`, `passw`, `passphrase`, `credential` or `auth` (not
a bare `pass`: `pass_config`, `DB_PASS` are not read as secrets), except where that word or the
name says it is something else:
  - a count or a tokenizer: a word ending in `tokens` (`max_num_batched_tokens`, `MAX_TOKENS`)
    or containing `tokeniz` (`--tokenizer`, `tokenizer_mode`, `TOKENIZERS_PARALLELISM`), and
    `author` (not `authoriz`), `keyword`, `keyboard`, `monkey` do not count;
  - a switch or a bound: the first word is `allow`, `enable`, `disable`, `no`, `max`, `min` or
    `num` (`--allow-credentials`, `enable_prompt_tokens_details`);
  - not the secret itself: the last word is an id, a quantity, a place or a kind (`id`, `ids`,
    `count`, `size`, `len`, `length`, `limit`, `threshold`, `budget`, `type`, `mode`, `format`,
    `name`, `url`, `uri`, `endpoint`, `host`, `port`, `timeout`, `enabled`, `required`,
    `parallelism`, `error`, `exception`, `warning`) or ends in `file`, `path` or `dir`
    (`AWS_ACCESS_KEY_ID`, `return_tokens_as_token_ids`, `long_prefill_token_threshold`,
    `--ssl-keyfile`, `HF_TOKEN_PATH`, `KeyError`).
Values that read as a switch or nothing (`None`, `True`, `False`, `null`, `true`, `false`, the
empty string) are left alone whatever the name: `api_key=None`, `allow_credentials=False`.
Numbers are not: a secret name decides, so `PASSWORD=12345678` is redacted.

What `text` redacts, each rule within one line:
  - command-line flags with a secret name: `--api-key V`, `--api-key=V`, `--api-key 'V'`, and
    argv list reprs `'--api-key', 'V'` (the first value only; `argv` takes all of `--api-key`'s);
    a value starting with `-` is the next flag, not a value;
  - entries with a secret name in dict, JSON and Namespace reprs and in assignments:
    `'api_key': 'V'`, `'api_key': ['V1', 'V2']`, `"api_key": "V"`, `api_key='V'`,
    `export HF_TOKEN=V`, `HF_TOKEN: V`, `X-Api-Key: V`; the value is a quoted string, a list of
    quoted strings or a bare word; an HTTP scheme word (`Bearer`, `Basic`, `Token`, `Digest`)
    before it is kept (`Authorization: Basic V`);
  - passwords in URLs: `scheme://user:V@host`;
  - `Bearer V` anywhere, unless V is a plain lower-case word (prose: "a Bearer token");
  - Hugging Face tokens anywhere: `hf_` and 30 or more letters and digits;
  - every `known` string verbatim, longest first, anywhere (they may span lines). Known strings
    shorter than 8 characters are ignored: a short secret would redact ordinary words;
  - every operator pattern (`check_pattern`): its group named `secret`, else its whole match.
Not redacted: flags, keys and variables with other names; numbers, booleans and `None`;
secrets split across lines except known strings and operator patterns; JSON nested as an
escaped string (`\\"api_key\\": ...`); a free-standing secret of no known shape.

`text` is cheap when nothing can match: substring tests for the trigger words before any
regex, and in a long text only the lines holding a trigger word are searched. It returns the
very string it was given when nothing changed.
"""
from __future__ import annotations

import bisect
import collections.abc
import datetime
import functools
import hashlib
import hmac
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from re import _parser as _sre  # the parser `re` itself uses; read-only here
from typing import Any

import msgspec

TOKEN_PREFIX = "[redacted:"
_TOKEN = r"\[redacted:[0-9a-f]{8}\]"
_TOKEN_RE = re.compile(_TOKEN)
_TOKEN_LEN = len(TOKEN_PREFIX) + 9

MIN_KNOWN = 8
MAX_PATTERN = 1000
#: a bounded repeat above this many times counts as unbounded for backtracking
LARGE_REPEAT = 10
#: texts longer than this are searched a line at a time, only where a trigger word stands
_WINDOWED = 2048

# -- names --------------------------------------------------------------------------------------

_STEMS = ("key", "token", "secret", "passw", "passphrase", "credential", "auth")
_NOT_STEM = re.compile(r"tokens$|tokeniz|author(?!iz)|keyword|keyboard|monkey")
_SWITCH_FIRST = frozenset({"allow", "enable", "disable", "no", "max", "min", "num"})
_NOT_SECRET_LAST = frozenset({
    "id", "ids", "count", "size", "len", "length", "limit", "threshold", "budget", "type", "mode",
    "format", "name", "url", "uri", "endpoint", "host", "port", "timeout", "enabled", "required",
    "parallelism", "error", "exception", "warning"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORDS = re.compile(r"[a-z0-9]+")
#: values that say "on", "off" or "nothing", never a secret
_SWITCHES = frozenset({"none", "true", "false", "null"})
#: flags that take several values (vLLM's api_key is a list: `--api-key K1 K2`)
_LIST_FLAGS = frozenset({"api_key"})


def _word_is_secret(word: str) -> bool:
    word = _NOT_STEM.sub("", word)
    return any(stem in word for stem in _STEMS)


@lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a flag, key, variable or header of this name holds a credential (module doc)."""
    low = name.lower()
    if not any(stem in low for stem in _STEMS):
        return False
    words = _WORDS.findall(_CAMEL.sub("_", name).lower())
    if not words or words[0] in _SWITCH_FIRST:
        return False
    last = words[-1]
    if last in _NOT_SECRET_LAST or last.endswith(("file", "path", "dir")):
        return False
    return any(_word_is_secret(w) for w in words)


def is_token(s: str) -> bool:
    """Whether `s` is exactly a redaction token."""
    return len(s) == _TOKEN_LEN and s.startswith(TOKEN_PREFIX) and _TOKEN_RE.fullmatch(s) is not None


# -- what a secret looks like in a line ----------------------------------------------------------

_Q = r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\""""
_QUOTED = re.compile(_Q)
_LIST = rf"\[[ \t]*(?:{_Q})(?:[ \t]*,[ \t]*(?:{_Q}))*[ \t]*,?[ \t]*\]"
_BARE = r"""[^\s'"`,;&()\[\]{}<>]+"""
_SCHEME = re.compile(r"(?i:(bearer|basic|token|digest))[ \t]+(?=\S)")
_SCHEME_WORDS = frozenset({"bearer", "basic", "token", "digest"})
#: a plain lower-case word after `Bearer` is prose ("a Bearer token"), not a credential
_PROSE = re.compile(r"[a-z]{1,19}")

#: `--name V`, `--name=V`, `--name 'V'`, `'--name', 'V'` (a value never starts with `-`)
_FLAG = re.compile(
    r"--(?<![\w-]--)(?P<name>[A-Za-z][\w.-]*)"
    r"""(?:=|['"][ \t]*,[ \t]*['"]|[ \t]+)"""
    rf"""(?P<val>{_TOKEN}|{_Q}|(?!-)[^\s'"`]+)""")
#: `'name': V`, `"name": V`, `name=V`, `name: V`; matched only where a stem stands in the name
_ASSIGN = re.compile(
    r"""(?<![\w.-])(?P<q>['"]?)(?P<name>[A-Za-z_][\w.-]*)(?P=q)[ \t]*(?:=(?!=)|:(?![:=/]))[ \t]*"""
    rf"(?P<val>{_TOKEN}|{_LIST}|{_Q}|(?:(?i:bearer|basic|token|digest)[ \t]+)?(?:{_TOKEN}|{_BARE}))")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_URL = re.compile(r"""://[^\s/@:'"]*:(?P<val>[^\s/@'"]+)@""")
_BEARER = re.compile(rf"Bearer(?<![A-Za-z0-9]Bearer)[ \t]+(?P<val>{_TOKEN}|[A-Za-z0-9._~+/=-]+)")
_HF = re.compile(r"hf_(?<![A-Za-z0-9]hf_)[A-Za-z0-9]{30,}")

#: substrings of the lower-cased text without which none of the rules above can match; a
#: "token" that ends a word in "tokens" or goes on as "tokeniz" names a count or a tokenizer
#: and is passed over ("GPU KV cache size: 4,096 tokens" is searched no further)
_TRIGGERS = ("key", "secret", "pass", "credential", "auth", "bearer", "hf_", "://")
_TOKEN_TRIGGER = re.compile(r"token(?!s(?![a-z0-9])|iz)")
#: the same as bytes, to find the lines of a long text worth searching
_TRIGGER_BYTES = tuple(t.encode() for t in _TRIGGERS)
_TOKEN_TRIGGER_BYTES = re.compile(_TOKEN_TRIGGER.pattern.encode())
_FLAG_ITEM = re.compile(r"--([A-Za-z][\w.-]*)(?:=(.*))?", re.S)
_PLACEHOLDER = re.compile(r"\{\w*\}")


def _redactable(value: str) -> bool:
    return bool(value) and value.lower() not in _SWITCHES and not is_token(value)


class _Pattern:
    """One operator pattern, with a literal every match must contain (a cheap pre-check)."""

    __slots__ = ("regex", "literal", "group")

    def __init__(self, regex: re.Pattern):
        self.regex = regex
        self.literal = _required_literal(regex)
        self.group = "secret" if "secret" in regex.groupindex else 0


class Redactor:
    """Replaces secrets by keyed tokens in text, command lines, environments and events."""

    def __init__(self, key: bytes, patterns: Sequence[str] = (), known: Iterable[str] = ()):
        if not isinstance(key, (bytes, bytearray)) or not key:
            raise ValueError("a redaction key must be non-empty bytes")
        self._key = bytes(key)
        self._tokens: dict[str, str] = {}
        self._clean: dict[int, str] = {}
        self._patterns = tuple(_Pattern(check_pattern(p)) for p in patterns)
        kept = {k for k in known if isinstance(k, str) and len(k) >= MIN_KNOWN and not is_token(k)}
        self._known = tuple(sorted(kept, key=lambda k: (-len(k), k)))
        self._known_re = (re.compile("|".join([_TOKEN, *map(re.escape, self._known)]))
                          if self._known else None)

    def __repr__(self) -> str:
        return f"Redactor(patterns={len(self._patterns)}, known={len(self._known)})"

    # -- tokens ---------------------------------------------------------------------------------

    def token(self, secret: str) -> str:
        """`[redacted:XXXXXXXX]`: the first 8 hex digits of HMAC-SHA256(key, secret)."""
        token = self._tokens.get(secret)
        if token is None:
            digest = hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256)
            token = f"{TOKEN_PREFIX}{digest.hexdigest()[:8]}]"
            if len(self._tokens) >= 4096:
                self._tokens.clear()
            self._tokens[secret] = token
        return token

    def _secret(self, value: str) -> str:
        """A value known to be secret, redacted; an HTTP scheme word before it stays."""
        if not _redactable(value):
            return value
        scheme = _SCHEME.match(value)
        if scheme:
            rest = value[scheme.end():]
            return value if is_token(rest) else value[:scheme.end()] + self.token(rest)
        return self.token(value)

    def _value_text(self, val: str) -> str:
        """A matched value (token, quoted string, list of them, or bare word), redacted."""
        first = val[0]
        if first == "[":
            if is_token(val):
                return val
            return _QUOTED.sub(lambda q: q[0][0] + self._secret(q[0][1:-1]) + q[0][-1], val)
        if first in "'\"":
            return first + self._secret(val[1:-1]) + first
        return val if val.lower() in _SCHEME_WORDS else self._secret(val)

    # -- text -------------------------------------------------------------------------------------

    def text(self, s: str) -> str:
        """`s` with every secret replaced by its token; `s` itself when nothing matched."""
        if len(s) > _WINDOWED:
            # a long text this redactor has just answered (an incident built redacted, then
            # recorded: the store passes every event through again) is not scanned twice
            if self._clean.get(id(s)) is s:
                return s
            out = self._long_text(s)
            if len(self._clean) >= 64:
                self._clean.clear()
            self._clean[id(out)] = out  # the entry holds the string: its id is not reused meanwhile
            return out
        return self._short_text(s)

    def _long_text(self, s: str) -> str:
        return self._finish(s, self._lines(s))

    def _short_text(self, s: str) -> str:
        if len(s) <= _WINDOWED:
            low = s.lower()
            out = s
            for trigger in _TRIGGERS:
                if trigger in low:
                    out = self._line(s, low)
                    break
            else:
                if "token" in low and _TOKEN_TRIGGER.search(low):
                    out = self._line(s, low)
        else:
            out = self._lines(s)
        return self._finish(s, out)

    def _finish(self, s: str, out: str) -> str:
        """Known secrets and the operator's patterns over what the built-in rules left."""
        if self._known_re is not None and any(k in out for k in self._known):
            out = self._known_re.sub(self._known_match, out)
        for pattern in self._patterns:
            if pattern.literal is None or pattern.literal in out:
                out = self._apply(pattern, out)
        return s if out is s or out == s else out

    def _lines(self, s: str) -> str:
        """A long text: only the lines holding a trigger word go through the rules. The search
        runs over the UTF-8 bytes, lower-cased: both are far cheaper than on a str that holds
        one non-ASCII character (vLLM's banner), and the rules never cross a line."""
        b = s.encode("utf-8", "surrogatepass")
        low = b.lower()
        n = len(b)
        lines: dict[int, int] = {}

        def line_at(i: int) -> int:
            start = low.rfind(b"\n", 0, i) + 1
            end = low.find(b"\n", i)
            lines[start] = end = n if end == -1 else end
            return end

        for trigger in _TRIGGER_BYTES:
            i = low.find(trigger)
            while i != -1:
                i = low.find(trigger, line_at(i) + 1)
        pos = 0
        while (hit := _TOKEN_TRIGGER_BYTES.search(low, pos)) is not None:
            pos = line_at(hit.start()) + 1
        changed = []
        for start in sorted(lines):
            end = lines[start]
            line = b[start:end].decode("utf-8", "surrogatepass")
            new = self._line(line)
            if new != line:
                changed.append((start, end, new))
        if not changed:
            return s
        pieces: list[str] = []
        done = 0
        for start, end, new in changed:
            pieces += (b[done:start].decode("utf-8", "surrogatepass"), new)
            done = end
        pieces.append(b[done:].decode("utf-8", "surrogatepass"))
        return "".join(pieces)

    def _line(self, w: str, low: str | None = None) -> str:
        """Every rule that stays within a line, in an order that keeps tokens stable."""
        if "--" in w:
            flagged = _FLAG.sub(self._named_match, w)
            if flagged != w:
                w, low = flagged, None
        if "=" in w or ":" in w:
            w = self._assignments(w, w.lower() if low is None else low)
        if "://" in w and "@" in w:
            w = _URL.sub(self._group_match, w)
        if "Bearer" in w:
            w = _BEARER.sub(self._bearer_match, w)
        if "hf_" in w:
            w = _HF.sub(self._whole_match, w)
        return w

    def _assignments(self, w: str, low: str) -> str:
        """`_ASSIGN` tried only at the names that hold a stem: a dict repr of 100 entries costs
        a few finds, not 100 matches."""
        hits = []
        for stem in _STEMS:
            i = low.find(stem)
            while i != -1:
                hits.append(i)
                i = low.find(stem, i + 1)
        if not hits:
            return w
        hits.sort()
        pieces: list[str] = []
        done = skip = 0
        for i in hits:
            if i < skip:
                continue
            a = i
            while a > skip and w[a - 1] in _NAME_CHARS:
                a -= 1
            m = _ASSIGN.match(w, a - 1) if a > skip and w[a - 1] in "'\"" else None
            if m is None:
                m = _ASSIGN.match(w, a)
            if m is None:
                skip = i + 1
                continue
            new = self._named_match(m)
            if new != m[0]:
                pieces += (w[done:m.start()], new)
                done = m.end()
            skip = m.end()
        if not pieces:
            return w
        pieces.append(w[done:])
        return "".join(pieces)

    def _named_match(self, m: re.Match) -> str:
        """A flag or an assignment: its value goes when its name is secret."""
        if not is_secret_name(m["name"]):
            return m[0]
        return _replace_group(m, "val", self._value_text(m["val"]))

    def _group_match(self, m: re.Match) -> str:
        return _replace_group(m, "val", self._secret(m["val"]))

    def _bearer_match(self, m: re.Match) -> str:
        return m[0] if _PROSE.fullmatch(m["val"]) else self._group_match(m)

    def _whole_match(self, m: re.Match) -> str:
        return self.token(m[0])

    def _known_match(self, m: re.Match) -> str:
        found = m[0]
        return found if found.startswith(TOKEN_PREFIX) and is_token(found) else self.token(found)

    def _apply(self, pattern: _Pattern, s: str) -> str:
        """An operator pattern; a match that is empty or touches a token is left as it is."""
        spans = [t.span() for t in _TOKEN_RE.finditer(s)] if TOKEN_PREFIX in s else []
        starts = [a for a, _ in spans]

        def replace(m: re.Match) -> str:
            a, b = m.span(pattern.group)
            if a == b or a < 0:
                return m[0]
            i = bisect.bisect_left(starts, b) - 1  # the last token starting before b
            if i >= 0 and spans[i][1] > a:
                return m[0]
            return _replace_group(m, pattern.group, self.token(m.string[a:b]))

        return pattern.regex.sub(replace, s)

    # -- command lines, environments, events --------------------------------------------------

    def argv(self, args: Sequence[str]) -> list[str]:
        """A command line as a list, its credential values redacted (all of `--api-key`'s)."""
        out = self._sequence(args)
        return list(out)

    def env(self, mapping: Mapping[str, str]) -> dict[str, str]:
        """An environment: values of secret names as tokens, `text` on the others."""
        return {name: self._secret(v) if is_secret_name(name) else self.text(v)
                for name, v in mapping.items()}

    def value(self, obj: Any) -> Any:
        """Any event or part of one, redacted; the very same object when nothing changed.

        Strings go through `text`, lists and tuples are also read as command lines (`argv`),
        a dict's values under a secret string key are secret, msgspec Structs are rebuilt only
        where a field changed. Struct field names are the schema's, not data: they are not read
        as secret names. Other types come back as they are."""
        t = type(obj)
        if t is str:
            return self.text(obj)
        if t is list or t is tuple:
            return self._sequence(obj)
        if t is dict:
            return self._dict(obj)
        if isinstance(obj, msgspec.Struct):
            changes = None
            for field in _text_fields(t):
                v = getattr(obj, field)
                new = self.value(v)
                if new is not v:
                    if changes is None:
                        changes = {}
                    changes[field] = new
            return obj if changes is None else msgspec.structs.replace(obj, **changes)
        return obj

    def _secret_value(self, v: Any) -> Any:
        """The value under a secret name: a string, or strings in a list, are secret."""
        if type(v) is str:
            return self._secret(v)
        if type(v) in (list, tuple):
            new = [self._secret(x) if type(x) is str else self.value(x) for x in v]
            if all(a is b for a, b in zip(new, v)):
                return v
            return new if type(v) is list else tuple(new)
        return self.value(v)

    def _dict(self, d: dict) -> dict:
        items: list | None = None
        for i, (k, v) in enumerate(d.items()):
            if type(k) is str:
                new_k = self.text(k)
                new_v = self._secret_value(v) if is_secret_name(k) else self.value(v)
            else:
                new_k, new_v = k, self.value(v)
            if items is None:
                if new_k is k and new_v is v:
                    continue
                items = list(d.items())[:i]
            items.append((new_k, new_v))
        return d if items is None else dict(items)

    def _sequence(self, seq: Sequence) -> Sequence:
        secret_at = frozenset(_flag_value_positions(seq))
        out: list | None = None
        for i, x in enumerate(seq):
            new = self._secret(x) if i in secret_at else self.value(x)
            if new is not x:
                if out is None:
                    out = list(seq)
                out[i] = new
        if out is None:
            return seq
        return tuple(out) if type(seq) is tuple else out


@functools.cache
def _text_fields(cls: type) -> tuple[str, ...]:
    """The fields of a Struct type that can hold text (by their annotations): numbers, flags,
    times and Literal vocabularies cannot carry a secret, so the walk skips them."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: read every field
        return tuple(cls.__struct_fields__)
    return tuple(name for name in cls.__struct_fields__ if _may_hold_text(hints.get(name, Any)))


def _may_hold_text(tp: Any) -> bool:
    if tp in (int, float, bool, type(None), datetime.datetime, datetime.date):
        return False
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return False
    if origin in (typing.Union, types.UnionType):
        return any(_may_hold_text(a) for a in typing.get_args(tp))
    if origin in (list, tuple, set, frozenset, dict, collections.abc.Sequence, collections.abc.Mapping):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return not args or any(_may_hold_text(a) for a in args)
    return True  # str, Any, a Struct, anything else: read it


def _replace_group(m: re.Match, group: str | int, new: str) -> str:
    a, b = m.span(group)
    if m.string[a:b] == new:
        return m[0]
    start = m.start()
    whole = m[0]
    return whole[:a - start] + new + whole[b - start:]


def _flag_value_positions(items: Sequence) -> Iterator[int]:
    """Indices of the items that are values of credential flags given as separate items."""
    expect = 0  # 0: none, 1: one value, 2: values until the next option
    for i, x in enumerate(items):
        if type(x) is not str:
            expect = 0
            continue
        if expect and x and x[0] != "-":
            yield i
            expect = 2 if expect == 2 else 0
            continue
        expect = 0
        m = _FLAG_ITEM.fullmatch(x) if x.startswith("--") else None
        if m is not None and m[2] is None and is_secret_name(m[1]):
            expect = 2 if m[1].replace("-", "_").lower() in _LIST_FLAGS else 1


def _flag_values(items: Sequence) -> Iterator[str]:
    """The literal values of credential flags in a command line (`--f V`, `--f=V`)."""
    for i in _flag_value_positions(items):
        yield items[i]
    for x in items:
        m = _FLAG_ITEM.fullmatch(x) if type(x) is str and x.startswith("--") else None
        if m is not None and m[2] is not None and is_secret_name(m[1]):
            yield m[2]


def known_secrets(settings: Any) -> list[str]:
    """The literal secrets the settings hold: each deployment's `env` values under secret names,
    and the values of credential flags in its `command` (the canary's), `serve_command` and
    `reload.argv` templates. Placeholders such as `{api_key}` are not literals and are left out;
    an HTTP scheme word before a value is not part of the secret."""
    found: dict[str, None] = {}
    for deployment in settings.deployments.values():
        values = [v for name, v in deployment.env.items() if is_secret_name(name)]
        reload = getattr(deployment, "reload", None)
        for argv in (deployment.command, deployment.serve_command, reload.argv if reload else ()):
            values.extend(_flag_values(argv))
        for v in values:
            scheme = _SCHEME.match(v)
            v = v[scheme.end():] if scheme else v
            if _redactable(v) and not _PLACEHOLDER.fullmatch(v):
                found[v] = None
    return list(found)


# -- operator patterns ------------------------------------------------------------------------

class _Hostile(Exception):
    pass


_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT)


def check_pattern(pattern: str) -> re.Pattern:
    """An operator's pattern, compiled; or ValueError saying in one sentence what is wrong.

    Refused: not a string, over 1,000 characters, not a valid regex, able to match the empty
    string, or prone to catastrophic backtracking: a repeat that is unbounded (or bounded above
    10) whose body holds another unbounded repeat (`(a+)+`, `(\\w*)*`), or an unbounded repeat
    over alternatives that can start with the same character or be empty (`(a|aa)+`). A single
    level such as `sk-[A-Za-z0-9]+` or `key=(?P<secret>\\S+)` is fine. The check reads the parse
    tree once, so it answers in bounded time. Adjacent repeats (`\\w*\\w*`) are not refused:
    they are polynomial, and a rule never reads past one text."""
    if not isinstance(pattern, str):
        raise ValueError(f"a redaction pattern must be a string, not {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"the pattern is {len(pattern):,} characters long, above the limit of 1,000")
    try:
        regex = re.compile(pattern)
        tree = _sre.parse(pattern)
        _scan(tree)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except RecursionError:
        raise ValueError("the pattern nests groups too deeply to be checked") from None
    except _Hostile as exc:
        raise ValueError(f"prone to catastrophic backtracking: {exc}") from None
    if regex.match("") is not None:
        raise ValueError("the pattern matches the empty string, so it would match everywhere")
    return regex


#: assertions that a match begins only at an edge: a run of digits or letters holds none inside it
_EDGES = (_sre.AT_BEGINNING, _sre.AT_BEGINNING_STRING, _sre.AT_BOUNDARY, _sre.AT_LOC_BOUNDARY, _sre.AT_UNI_BOUNDARY)


def _begins_unbounded_in(seq) -> bool | None:
    """Whether a match may begin with an unbounded repeat (`\\d+`, `\\s*`, with nothing but
    optional parts before it): True, False, or None where `seq` may match nothing at all."""
    for op, av in seq:
        if op in (_sre.ASSERT, _sre.ASSERT_NOT) and av[0] < 0 or op is _sre.AT and av in _EDGES:
            return False  # a lookbehind or an edge fixes where a match may begin
        if op is _sre.AT:
            continue
        if op is _sre.SUBPATTERN or op is _sre.ATOMIC_GROUP:
            begins = _begins_unbounded_in(av[-1] if op is _sre.SUBPATTERN else av)
        elif op is _sre.BRANCH:
            each = [_begins_unbounded_in(alt) for alt in av[1]]
            begins = True if any(each) else (False if all(b is False for b in each) else None)
        elif op in _REPEATS:
            low, high, body = av
            if high == _sre.MAXREPEAT:
                return True
            begins = _begins_unbounded_in(body)
            if begins is False and low == 0:
                begins = None  # may be left out: what follows may begin the match
        else:
            return False
        if begins is not None:
            return begins
    return None


def begins_unbounded(pattern: str) -> bool:
    """Whether a match of `pattern` (a valid regex) may begin with an unbounded repeat: the regex
    engine then retries it at every character of a long run of what it repeats, quadratic in
    the run's length (a rule's `(?P<free>\\d+) GiB free` on a 5,000-digit number). A literal, a
    word boundary or a lookbehind before it fixes where a match may begin."""
    return bool(_begins_unbounded_in(_sre.parse(pattern)))


def _scan(seq) -> tuple[bool, bool]:
    """(holds an unbounded repeat, holds alternatives that overlap); raises _Hostile."""
    unbounded = ambiguous = False
    for op, av in seq:
        if op in _REPEATS:
            _low, high, body = av
            inner_unbounded, inner_ambiguous = _scan(body)
            # a repeat bounded above LARGE_REPEAT backtracks like an endless one: `(?:a{1,50})+b`
            large = high == _sre.MAXREPEAT or high > LARGE_REPEAT
            if large and inner_unbounded:
                raise _Hostile("a repeated group contains another unbounded repeat, as in (a+)+")
            if large and inner_ambiguous:
                raise _Hostile("an unbounded repeat goes over alternatives that can match the same "
                               "text, as in (a|aa)+")
            unbounded = unbounded or large or inner_unbounded
            ambiguous = ambiguous or inner_ambiguous
        elif op is _sre.BRANCH:
            alternatives = av[1]
            for alt in alternatives:
                u, a = _scan(alt)
                unbounded, ambiguous = unbounded or u, ambiguous or a
            ambiguous = ambiguous or _overlap(alternatives)
        else:
            for body in _bodies(op, av):
                u, a = _scan(body)
                unbounded, ambiguous = unbounded or u, ambiguous or a
    return unbounded, ambiguous


def _bodies(op, av) -> list:
    if op is _sre.SUBPATTERN:
        return [av[3]]
    if op is _sre.ATOMIC_GROUP:
        return [av]
    if op in (_sre.ASSERT, _sre.ASSERT_NOT):
        return [av[1]]
    if op is _sre.GROUPREF_EXISTS:
        return [b for b in av[1:] if b is not None]
    return []


def _first_chars(seq) -> frozenset | None:
    """The characters a sequence can start with; None for any, or when it can be empty."""
    for op, av in seq:
        if op is _sre.LITERAL:
            return frozenset((av,))
        if op is _sre.AT:
            continue
        if op is _sre.SUBPATTERN:
            return _first_chars(av[3])
        if op is _sre.IN:
            chars: set[int] = set()
            for kind, value in av:
                if kind is _sre.LITERAL:
                    chars.add(value)
                elif kind is _sre.RANGE and value[1] - value[0] < 256:
                    chars.update(range(value[0], value[1] + 1))
                else:
                    return None
            return frozenset(chars)
        if op in _REPEATS and av[0] >= 1:
            return _first_chars(av[2])
        return None
    return None


def _overlap(alternatives) -> bool:
    seen: set[int] = set()
    for alt in alternatives:
        first = _first_chars(alt)
        if first is None or seen & first:
            return True
        seen |= first
    return False


def _required_literal(regex: re.Pattern) -> str | None:
    """The longest run of literal characters every match must contain, or None."""
    if regex.flags & re.IGNORECASE:
        return None
    best = ""

    def walk(seq):
        nonlocal best
        run: list[str] = []
        for op, av in seq:
            if op is _sre.LITERAL:
                run.append(chr(av))
                continue
            if len(run) > len(best):
                best = "".join(run)
            run = []
            if op is _sre.SUBPATTERN and not (av[1] & re.IGNORECASE):
                walk(av[3])
            elif op in _REPEATS and av[0] >= 1:
                walk(av[2])
        if len(run) > len(best):
            best = "".join(run)

    walk(_sre.parse(regex.pattern, regex.flags))
    return best or None
