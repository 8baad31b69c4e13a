"""Upcasters: turn an event body stored under an older schema version into the next one.

Registered per (type, from_version); reading applies them in a chain up to the type's
current SCHEMA_VERSION. Upcasters are pure functions of the stored body, so replaying a
log gives the same events today as it did yesterday.
"""
from __future__ import annotations

from collections.abc import Callable

from selfheal.schemas.fingerprints import text_fingerprint

Upcaster = Callable[[dict], dict]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, from_version: int):
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(type_name, from_version)] = fn
        return fn
    return register


def upcast(type_name: str, version: int, body: dict, current: int) -> dict:
    while version < current:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise LookupError(f"{type_name} v{version}: no upcaster to v{version + 1}")
        body = step(body)
        version += 1
    return body


@upcaster("IncidentCaptured", 1)
def _incident_v1_to_v2(body: dict) -> dict:
    # v1 stored the source as a bare word and the text as `text`, and had no fingerprint;
    # v2 structures the source and fingerprints the text so repeats fold into one intent
    text = body["text"]
    return {
        "type": "IncidentCaptured",
        "incident_id": body["incident_id"],
        "deployment": body["deployment"],
        "source": {"kind": body.get("source", "file")},
        "raw_text": text,
        "fingerprint": text_fingerprint(text),
        "context": body.get("context", {}),
    }
