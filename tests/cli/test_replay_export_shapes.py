"""Issue 16.5 for replay and export, through the installed `selfheal` as a subprocess: `export`
prints JSON Lines in the `events --json` envelope (its header too), which `replay --bundle`
reads back (and bundles in the shape before the envelope still replay); `replay --json` is one
document whose strings hold neither JSON nor a Python repr."""
from __future__ import annotations

import json
import re

import pytest

from selfheal.edges.sim import load_scenario, simulate
from tests.cli.test_first_hour import CHAT, ENVELOPE, sh

#: what a Python repr leaves in a string: a dict or list of quoted keys, a Struct or call, None
REPR = re.compile(r"[{\[]\s*'|\b[A-Z]\w*\(\w+=|\bdatetime\.|^None$")


@pytest.fixture(scope="module")
def healed(tmp_path_factory):
    """A log of two heals of one failure: the first promotes, the second is deduplicated."""
    folder = tmp_path_factory.mktemp("replay")
    (folder / "selfheal.toml").write_text(CHAT)
    (folder / "vllm.log").write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    for _ in range(2):
        proc = sh(folder, "--db", "log.db", "heal", "vllm.log")
        assert proc.returncode == 0, proc.stderr
    first = json.loads(sh(folder, "--db", "log.db", "events", "--type", "IncidentCaptured", "--json")
                       .stdout.splitlines()[0])["data"]["incident_id"]
    return folder, first


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def embedded_json(text: str):
    """The first JSON object or array inside `text`, or None."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                found, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            if isinstance(found, (dict, list)) and found:
                return found
    return None


@pytest.mark.parametrize("args", [(), ("--mode", "disabled"), ("--set", "rate_limit.cooldown_hours=0")])
def test_replay_json_is_one_document_with_no_json_or_repr_in_its_strings(healed, args):
    folder, _ = healed
    proc = sh(folder, "--db", "log.db", "replay", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)  # one document: this fails on JSON Lines or trailing text
    assert body["incidents"] == 2 and body["results"]
    for text in strings(body):
        assert embedded_json(text) is None, f"JSON inside a string: {text!r}"
        assert not REPR.search(text), f"a repr inside a string: {text!r}"
    promoted = body["results"][0]["original"]
    assert promoted["outcome"]["outcome"] == "promoted" and isinstance(promoted["outcome"]["config"], dict)
    assert promoted["intent"] == {"action": "tune", "seed_fix": {"gpu_memory_utilization": 0.6}}
    assert promoted["gate"] == {"decision": "started"}
    assert promoted["observation"]["kind"] == "startup_free_memory_below_utilization"


def test_replay_text_still_speaks_in_sentences(healed):
    folder, _ = healed
    proc = sh(folder, "--db", "log.db", "replay", "--mode", "disabled")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("replayed 2 incidents; 1 decided differently;")
    assert re.search(r"DIFFERS \S+Z  \w{8}  chat: recorded_only$", lines[1])
    assert lines[2].strip() == "gate: started  ->  nothing"
    assert re.fullmatch(r"\s+outcome: promoted \{\"gpu_memory_utilization\":0\.65,.*\}  ->  recorded_only", lines[4])


def test_export_is_json_lines_in_the_events_envelope_and_replays(healed, tmp_path):
    folder, first = healed
    proc = sh(folder, "--db", "log.db", "export", first[:8])
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) > 10 and all(set(r) == ENVELOPE and isinstance(r["data"], dict) for r in rows)
    assert rows[0]["type"] == "SelfhealBundle" and rows[0]["data"]["incident_id"] == first
    assert {r["type"] for r in rows[1:]} >= {"IncidentCaptured", "PromotionProposed"}
    # -o writes the same lines
    assert sh(folder, "--db", "log.db", "export", first[:8], "-o", tmp_path / "b.jsonl").returncode == 0
    assert (tmp_path / "b.jsonl").read_text() == proc.stdout
    # round trip: the bundle replays alone, as the log did
    (tmp_path / "stdout.jsonl").write_text(proc.stdout)
    replayed = sh(tmp_path, "--db", tmp_path / "none.db", "replay", "--bundle", "stdout.jsonl", "--json")
    assert replayed.returncode == 0, replayed.stderr
    body = json.loads(replayed.stdout)
    assert (body["incidents"], body["differing"]) == (1, 0)
    original = json.loads(sh(folder, "--db", "log.db", "replay", "--json").stdout)["results"][0]
    assert body["results"] == [original]
    assert not (tmp_path / "none.db").exists()


def test_a_bundle_in_the_shape_before_the_envelope_still_replays(healed, tmp_path):
    folder, first = healed
    rows = [json.loads(line) for line in sh(folder, "--db", "log.db", "export", first).stdout.splitlines()]
    old_header = {"selfheal_bundle": 1, **rows[0]["data"]}
    (tmp_path / "old.jsonl").write_text("\n".join(json.dumps(r) for r in [old_header, *rows[1:]]) + "\n")
    proc = sh(tmp_path, "--db", tmp_path / "none.db", "replay", "--bundle", "old.jsonl", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (json.loads(proc.stdout)["incidents"], json.loads(proc.stdout)["differing"]) == (1, 0)


def test_a_bundle_whose_first_line_is_another_event_is_refused_by_name(healed, tmp_path):
    folder, first = healed
    rows = sh(folder, "--db", "log.db", "export", first).stdout.splitlines()
    (tmp_path / "headless.jsonl").write_text("\n".join(rows[1:]) + "\n")
    proc = sh(tmp_path, "--db", tmp_path / "none.db", "replay", "--bundle", "headless.jsonl")
    assert proc.returncode != 0
    assert "headless.jsonl: line 1: not a selfheal bundle" in proc.stderr
