"""Encoding event Structs to the log's JSON bodies and back, upcasting old versions: the typed
store's codec (the vocabulary itself, schemas.events, knows nothing of the log).

Bodies are bounded, so that one row cannot wedge the log: a body decoded untyped (an old
version, before its upcast) is at most MAX_BODY_BYTES and nested at most MAX_DEPTH deep, and
the writer records nothing longer than a reader accepts. A typed decode needs no such check:
the Struct bounds what it builds, and a recursion that runs away (skipping a deep field the
type does not know) is caught. Either way a bad body is one CorruptEvent naming its position.
"""
from __future__ import annotations

import re
from datetime import datetime

import msgspec

from selfheal.eventstore.errors import BodyTooLarge, CorruptEvent, UnknownEventType
from selfheal.schemas.events import EVENT_TYPES, Event
from selfheal.schemas.upcasting import upcast

#: the longest body the log records, and decodes untyped (the largest event, a 1 MiB incident
#: as JSON-escaped text, is at most 6 MiB)
MAX_BODY_BYTES = 16 << 20
#: the deepest nesting of arrays and objects decoded untyped (the vocabulary nests 3 deep)
MAX_DEPTH = 64

def _enc_hook(obj):
    # datetime subclasses (freezegun's FakeDatetime in tests) encode like datetimes do
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_raw = msgspec.json.Decoder()
#: what decoding a bad body raises (RecursionError: nesting deeper than the interpreter's stack)
_BAD_BODY = (msgspec.DecodeError, msgspec.ValidationError, LookupError, RecursionError)
#: a JSON string, escapes included, and the brackets that open or close a level
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def encode(event: Event) -> str:
    body = _encoder.encode(event)
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"{type(event).__name__}: the body is {len(body):,} bytes, over the log's limit of "
                           f"{MAX_BODY_BYTES:,}: not recorded")
    return body.decode()


def fast_decoder(type_name: str, schema_version: int):
    """The decoder for rows already at the current version, or None (take `decode`)."""
    cls = EVENT_TYPES.get(type_name)
    if cls is not None and cls.SCHEMA_VERSION == schema_version:
        return _decoders[type_name].decode
    return None


def readable(type_name: str, schema_version: int, *, where: str = "") -> type[Event]:
    """The event class of a row's type, or UnknownEventType when this build cannot read it (an
    unknown type, a newer version): what decoding refuses before it looks at any body."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventType(f"{where}unknown event type {type_name!r} (written by a newer selfheal?)")
    if schema_version > cls.SCHEMA_VERSION:
        raise UnknownEventType(f"{where}{type_name} v{schema_version} is newer than this build's v{cls.SCHEMA_VERSION}")
    return cls


def over_limits(data: str | bytes) -> str | None:
    """What makes `data` too big to decode untyped, or None: its size, or its nesting (counted
    outside strings, and only when it holds more brackets than MAX_DEPTH at all)."""
    if len(data) > MAX_BODY_BYTES:
        return f"the body is {len(data):,} bytes, over the limit of {MAX_BODY_BYTES:,}"
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray, memoryview)) else data
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        if bracket[0] in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return f"the body is nested deeper than {MAX_DEPTH} levels"
        else:
            depth -= 1
    return None


def untyped(data: str | bytes, *, where: str = "", what: str = "the body") -> object:
    """A body decoded into plain objects, within the limits; CorruptEvent where it cannot be."""
    problem = over_limits(data)
    if problem is not None:
        raise CorruptEvent(f"{where}{what} does not decode: {problem}")
    try:
        return _raw.decode(data)
    except _BAD_BODY as exc:
        raise CorruptEvent(f"{where}{what} does not decode: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "the body is nested too deep to decode"
    return str(exc)


def decode(type_name: str, schema_version: int, data: str | bytes, *, where: str = "") -> Event:
    cls = readable(type_name, schema_version, where=where)
    what = f"{type_name} v{schema_version}"
    if schema_version != cls.SCHEMA_VERSION:
        body = untyped(data, where=where, what=what)
        if not isinstance(body, dict):
            raise CorruptEvent(f"{where}{what} does not decode: the body is a JSON {type(body).__name__}, not an object")
        try:
            return msgspec.convert(upcast(type_name, schema_version, body, cls.SCHEMA_VERSION), cls)
        except (*_BAD_BODY, TypeError, ValueError, AttributeError) as exc:  # an upcaster given wrong types
            raise CorruptEvent(f"{where}{what} does not decode: {_why(exc)}") from None
    try:
        return _decoders[type_name].decode(data)
    except _BAD_BODY as exc:
        problem = over_limits(data) or _why(exc)  # a runaway recursion says how deep, where it can
        raise CorruptEvent(f"{where}{what} does not decode: {problem}") from None
