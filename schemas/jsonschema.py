"""JSON Schemas of every event type, generated from the Structs into `schemas/json/`.

Regenerate after changing an event: `python -m selfheal.schemas.jsonschema`. A test fails when the
files and the Structs disagree, so the published schemas never drift from the code.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from selfheal.schemas.events import EVENT_TYPES

SCHEMA_DIR = Path(__file__).parent / "json"


def event_schema(name: str) -> dict:
    cls = EVENT_TYPES[name]
    (ref,), components = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    body = dict(components[name])
    defs = {k: v for k, v in components.items() if k != name}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"selfheal/events/{name}.v{cls.SCHEMA_VERSION}.json",
        "x-schema-version": cls.SCHEMA_VERSION,
        **body,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def render(name: str) -> str:
    return json.dumps(event_schema(name), indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(EVENT_TYPES):
        path = directory / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale.stem not in EVENT_TYPES:
            stale.unlink()
    return written


if __name__ == "__main__":
    for path in write_all():
        print(path, file=sys.stderr)
