"""The one text fingerprint: a short, stable name for a text, so repeats can be recognised.

UTF-8 with "surrogatepass": every str has exactly one encoding (a lone surrogate, which a
library caller may hand in after decoding with "surrogateescape", is encoded as itself rather
than replaced or refused), so two texts share a fingerprint only when their SHA-256 prefixes
collide. For text without lone surrogates, which is all text the log can hold (its JSON
refuses them), this equals plain UTF-8, so no stored fingerprint changes.
"""
from __future__ import annotations

import hashlib


def text_fingerprint(text: str, prefix: str = "sha256:") -> str:
    """`prefix` + the first 16 hex digits of the SHA-256 of `text` in UTF-8."""
    return prefix + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def parts_fingerprint(*parts: object, prefix: str) -> str:
    """The fingerprint of several fields at once (an alert's, an environment's): joined by the
    unit separator, which no field holds, so ("a", "bc") and ("ab", "c") differ."""
    return text_fingerprint("\x1f".join(map(str, parts)), prefix)


def alert_fingerprint(deployment: str, kind: str, *parts: object) -> str:
    """What makes two alerts "the same" (never ids or times): repeats are grouped by it."""
    return parts_fingerprint(deployment, kind, *parts, prefix="alert:")
