import json

from selfheal.schemas.events import EVENT_TYPES
from selfheal.schemas.jsonschema import SCHEMA_DIR, render


def test_a_schema_file_per_event_type_and_no_other():
    assert {p.stem for p in SCHEMA_DIR.glob("*.json")} == set(EVENT_TYPES)


def test_schema_files_match_the_structs():
    stale = [name for name in EVENT_TYPES if (SCHEMA_DIR / f"{name}.json").read_text() != render(name)]
    assert not stale, f"regenerate with `python -m selfheal.schemas.jsonschema`: {stale}"


def test_schemas_carry_their_version():
    schema = json.loads((SCHEMA_DIR / "IncidentCaptured.json").read_text())
    assert schema["x-schema-version"] == 2
    assert schema["properties"]["type"] == {"enum": ["IncidentCaptured"]}
