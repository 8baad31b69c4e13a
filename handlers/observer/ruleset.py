"""A RuleSet: rules compiled once, with a version and a content digest, that diagnose logs.

The digest is the identity of the content: sha256 over a canonical JSON of the rules (patterns
as matched, expressions and note templates re-rendered from their parse trees), so comments,
whitespace, TOML layout and the spacing inside expressions do not change it, while any change
of meaning does. The `[ruleset]` header (version, description) is not part of it: the same
rules under another name are the same rules.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

from selfheal.handlers.observer.configured import configured_matchers
from selfheal.handlers.observer.encoding import as_utf8
from selfheal.handlers.observer.endings import tail_of
from selfheal.handlers.observer.engine import Diagnosis, Interpretation, Matcher, compile_rules, read
from selfheal.handlers.observer.logfile import FileBytes, open_log
from selfheal.handlers.observer.paste import unpasted_str
from selfheal.handlers.observer.prefilter import prefilter_for
from selfheal.handlers.observer.recase import RECASE_AT_MOST, phrases, recased, respelled
from selfheal.handlers.observer.spec import RuleSpec
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import ServingConfig

_DEFAULT_BOUNDS = ActuatorBounds()


class RuleSet:
    """Compiled rules. `rules` are the specs (plain data), `matchers` what the engine runs."""

    __slots__ = ("rules", "matchers", "version", "description", "source", "digest", "_phrases")

    def __init__(self, rules: Iterable[RuleSpec], version: str = "", description: str = "", source: str = ""):
        self.rules: tuple[RuleSpec, ...] = tuple(rules)
        self.matchers: tuple[Matcher, ...] = compile_rules(self.rules)  # raises RuleProblem
        canonical = json.dumps([m.canonical for m in self.matchers], sort_keys=True, ensure_ascii=False,
                               separators=(",", ":"))
        self.digest = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        # a file without a declared version is named by its content
        self.version = version or f"unversioned-{self.digest[7:19]}"
        self.description = description
        self.source = source
        self._phrases: tuple | None = None  # recase.phrases of the patterns, made on first use

    def diagnose(self, text: str | bytes | os.PathLike, current: ServingConfig | None = None,
                 bounds: ActuatorBounds | None = None, safety_buffer: float = 0.10) -> Diagnosis:
        """Read a vLLM log (any text, its bytes, or the path of a log file) and say which config
        failure it shows, if any.

        Bytes, and a file's bytes, are read as UTF-8 with U+FFFD for bad bytes: the result is
        that of the decoded text, but a long log is scanned as bytes and only the lines that
        matter are decoded. A regular file is read in pieces into one reused buffer
        (logfile.py), so memory does not grow with its size; it is read up to the size it had
        when opened. Raises OSError when the file cannot be read, and
        logfile.LogFileChanged when it shrinks while it is read.

        `current` is the config the log came from, when known: some fixes are relative to it (no
        KV memory, a bare PyTorch OOM). `bounds` give the actuator grid fixes are rounded to;
        values are not clamped to them. `safety_buffer` is applied on the side of safety.
        """
        args = (current, bounds or _DEFAULT_BOUNDS, safety_buffer)
        if isinstance(text, os.PathLike):
            data = open_log(text)
            if isinstance(data, bytes):
                return self.diagnose(data, *args)
            with data:
                read = as_utf8(data)  # a log written as UTF-16 (encoding.py)
                if isinstance(read, str) or not prefilter_for(self.matchers).bytes_ok:
                    return self.diagnose(read if isinstance(read, str) else read[:], *args)
                return self._diagnose(read, *args)
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = as_utf8(text)
            if not isinstance(text, str) and not prefilter_for(self.matchers).bytes_ok:
                text = bytes(text[:]).decode("utf-8", "replace")
        return self._diagnose(text, *args)

    def _diagnose(self, text: str | bytes | FileBytes, current: ServingConfig | None, bounds: ActuatorBounds,
                  safety_buffer: float) -> Diagnosis:
        # the rules bound to a cap the log configured, where it configures one (configured.py)
        matchers = self.matchers + configured_matchers(text, self.matchers)
        d = read(text, matchers, lambda: Interpretation(current, bounds, safety_buffer, matchers)).diagnosis(
            lambda: tail_of(text))
        if d.findings or len(text) > RECASE_AT_MOST:
            return d
        # a short paste that names no failure may say vLLM's words in another case, or with a
        # letter or two wrong where a hand or an OCR retyped them (recase.py)
        given = text if isinstance(text, str) else bytes(text[:]).decode("utf-8", "replace")
        given = unpasted_str(given)  # vLLM's words are looked for in the text as it was before the paste
        if self._phrases is None:
            self._phrases = phrases(p for rule in self.rules for p in rule.patterns)
        again = respelled(recased(given, self._phrases), self._phrases)
        if again == given:
            return d
        recased_d = read(again, self.matchers, lambda: Interpretation(current, bounds, safety_buffer, self.matchers)).diagnosis(
            lambda: tail_of(again))
        # a log cut short is told from what it lacks, which a text in another case lacks anyway
        return recased_d if any(f.confidence != "truncated" for f in recased_d.findings) else d

    def rule(self, rule_id: str) -> RuleSpec:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={len(self.rules)}, digest={self.digest[:19]}...)"
