"""Encoding event Structs to the log's JSON bodies and back, upcasting old versions: the typed
store's codec (the vocabulary itself, schemas.events, knows nothing of the log)."""
from __future__ import annotations

from datetime import datetime

import msgspec

from selfheal.eventstore.errors import CorruptEvent, UnknownEventType
from selfheal.schemas.events import EVENT_TYPES, Event
from selfheal.schemas.upcasting import upcast

def _enc_hook(obj):
    # datetime subclasses (freezegun's FakeDatetime in tests) encode like datetimes do
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_raw = msgspec.json.Decoder()


def encode(event: Event) -> str:
    return _encoder.encode(event).decode()


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


def decode(type_name: str, schema_version: int, data: str | bytes, *, where: str = "") -> Event:
    cls = readable(type_name, schema_version, where=where)
    try:
        if schema_version == cls.SCHEMA_VERSION:
            return _decoders[type_name].decode(data)
        body = upcast(type_name, schema_version, _raw.decode(data), cls.SCHEMA_VERSION)
        return msgspec.convert(body, cls)
    except (msgspec.DecodeError, msgspec.ValidationError, LookupError, KeyError) as exc:
        raise CorruptEvent(f"{where}{type_name} v{schema_version} does not decode: {exc}") from None
