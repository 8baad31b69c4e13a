"""Sealed fields: text the log keeps unreadable without a key that lives outside the chain.

An append-only, hash-chained log cannot take a leak back: a secret that got into an incident's
text (a pattern nobody had listed for redaction yet) would stay there. So the fields an event
class lists in `SEALED` (an incident's raw text) are stored encrypted, each event with its own
random 256-bit key, and the key is stored beside the log, not in it (the recorder's `keys`,
written in the same transaction as the event). `selfheal forget` destroys the key and records
that it did: the text becomes unreadable for good, the ciphertext stays where the chain covers
it, and `verify` still passes (crypto-shredding).

The cipher is SHAKE-256 as a keystream (an extendable-output function keyed by a key used for
one message only) XORed with the UTF-8 text: the standard library has no AES, and one key per
message needs no nonce. Integrity is the hash chain's job, not the cipher's.

What it costs: one key row per incident (32 bytes), one key lookup and one keystream per
incident read; replay of a forgotten incident has no text to replay and says so.
"""
from __future__ import annotations

import base64
import hashlib
import os

import msgspec

#: the stored form of a sealed field: this prefix, then the ciphertext in base64
PREFIX = "sealed:v1:"
#: what a reader gets in place of a forgotten text
FORGOTTEN = "[selfheal: this text was forgotten (selfheal forget); its key is destroyed]"
_DOMAIN = b"selfheal-seal-v1\x00"


def new_key() -> bytes:
    return os.urandom(32)


def _keystream(key: bytes, length: int) -> bytes:
    return hashlib.shake_256(_DOMAIN + key).digest(length)


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    stream = _keystream(key, len(data))
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(len(data), "little")


def seal(text: str, key: bytes) -> str:
    return PREFIX + base64.b64encode(_xor(text.encode("utf-8", "surrogatepass"), key)).decode("ascii")


def is_sealed(value: object) -> bool:
    return type(value) is str and value.startswith(PREFIX)


def unseal(value: str, key: bytes | None) -> str:
    """The text of a sealed value; FORGOTTEN when its key is gone. A value that is not sealed
    (written before sealing existed) is returned as it is."""
    if not is_sealed(value):
        return value
    if key is None:
        return FORGOTTEN
    return _xor(base64.b64decode(value[len(PREFIX):]), key).decode("utf-8", "surrogatepass")


def sealed_fields(event_type: type) -> tuple[str, ...]:
    return getattr(event_type, "SEALED", ())


def sealed(event, key: bytes):
    """`event` with each of its SEALED fields sealed under `key`."""
    return msgspec.structs.replace(event, **{name: seal(getattr(event, name), key)
                                             for name in sealed_fields(type(event))})


def opened(event, key: bytes | None):
    """`event` with each of its SEALED fields readable again (FORGOTTEN without a key)."""
    changes = {name: unseal(getattr(event, name), key) for name in sealed_fields(type(event))
               if is_sealed(getattr(event, name))}
    return msgspec.structs.replace(event, **changes) if changes else event


def forgotten(event) -> bool:
    """Whether some sealed field of `event` could not be opened."""
    return any(getattr(event, name) == FORGOTTEN for name in sealed_fields(type(event)))


__all__ = ["FORGOTTEN", "PREFIX", "forgotten", "is_sealed", "new_key", "opened", "seal", "sealed",
           "sealed_fields", "unseal"]
