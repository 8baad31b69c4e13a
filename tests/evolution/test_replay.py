"""Replay, what-if, bundles and --as-of, on real SQLite logs of real loop runs."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from selfheal.cli.main import cli
from selfheal.edges import deployments
from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.handlers.replay import apply_overrides, export_bundle, import_bundle, replay
from selfheal.schemas.config import ConfigError, parse_settings
from selfheal.schemas.events import IncidentSource

T0 = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)
TOML = '[deployments.ws]\nscenario = "workstation-12gb-speech"\n'


def wall():
    return datetime.now(timezone.utc)


@pytest.fixture
def history(tmp_path):
    """Four failures of one deployment at 0, 6, 12 and 18 h: three runs, the fourth refused."""
    (tmp_path / "selfheal.toml").write_text(TOML)
    settings = parse_settings(TOML)
    edges = deployments.build(settings)
    store = open_store(tmp_path / "log.db", create=True)
    text = simulate(load_scenario("workstation-12gb-speech")).log_text
    positions = []
    for hours in (0, 6, 12, 18):
        with freeze_time(T0 + timedelta(hours=hours)):
            loop.capture(store, edges["ws"], text, IncidentSource(kind="file", path="vllm.log"), wall)
            loop.run(store, settings, edges, clock=wall)
        positions.append(store.last_position())
    yield tmp_path, settings, edges, store, positions
    store.close()


def test_replay_of_a_recorded_history_reproduces_every_decision(history):
    _, settings, edges, store, _ = history
    report = replay(store, settings, edges)
    assert report.incidents == 4 and report.differing == 0
    assert set(report.canary_answers) == {"recorded"}  # nothing was executed again
    last = [r.replayed["gate"] for r in report.results][-1]
    assert last["decision"] == "refused" and last["reason"] == ["rate limit"]


def test_replay_of_the_log_through_the_cli(history):
    tmp_path, _, _, _, _ = history
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "log.db"), "--config", str(tmp_path / "selfheal.toml"),
                                      "replay", "--set", "rate_limit.runs=5", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert (body["incidents"], body["differing"]) == (4, 1)


def test_replay_with_another_setting_shows_the_difference(history):
    _, settings, edges, store, _ = history
    what_if = apply_overrides(settings, ["rate_limit.runs=5"], None)
    report = replay(store, what_if, edges)
    assert report.differing == 1
    (changed,) = [r for r in report.results if r.differs]
    assert changed.original["gate"]["decision"] == "refused" and changed.replayed["gate"] == {"decision": "started"}
    assert "gate" in changed.differs
    with pytest.raises(ConfigError, match="--set: rate_limit.runs"):
        apply_overrides(settings, ["rate_limit.runs=0"], None)


def test_replay_in_another_mode(history):
    _, settings, edges, store, _ = history
    report = replay(store, settings, edges, mode="disabled")
    assert all(r.replayed["gate"] is None and r.replayed["outcome"] == {"outcome": "recorded_only"} for r in report.results[:1])


def test_a_bundle_replays_identically_in_an_empty_log(history, tmp_path):
    _, settings, edges, store, _ = history
    first = next(store.read(types=["IncidentCaptured"])).event.incident_id
    lines = export_bundle(store, settings, first)
    header = json.loads(lines[0])
    assert (header["type"], header["schema_version"], header["data"]["incident_id"]) == ("SelfhealBundle", 1, first)
    bundle_settings, scratch = import_bundle(lines)
    a = replay(scratch, bundle_settings, deployments.build(bundle_settings))
    b = replay(scratch, bundle_settings, deployments.build(bundle_settings))
    assert a.incidents == 1 and a.differing == 0 and msgspec.json.encode(a) == msgspec.json.encode(b)
    # through the CLI too: export to a file, replay it with no log at all
    path = tmp_path / "bundle.jsonl"
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", str(tmp_path / "log.db"), "--config", str(tmp_path / "selfheal.toml"),
                              "export", first[:8], "-o", str(path)], catch_exceptions=False)
    assert out.exit_code == 0
    result = runner.invoke(cli, ["--db", str(tmp_path / "none.db"), "replay", "--bundle", str(path), "--json"],
                           catch_exceptions=False)
    body = json.loads(result.output)
    assert body["incidents"] == 1 and body["differing"] == 0
    assert not (tmp_path / "none.db").exists()


def test_as_of_answers_what_was_believed_then(history):
    tmp_path, _, _, store, positions = history
    runner = CliRunner()
    base = ["--db", str(tmp_path / "log.db"), "--config", str(tmp_path / "selfheal.toml")]

    def ask(*args):
        return json.loads(runner.invoke(cli, [*base, *args, "--json"], catch_exceptions=False).output)

    after_first = str(positions[0])
    assert [r["status"] for r in ask("history", "--as-of", after_first)] == ["promoted"]
    assert [r["status"] for r in ask("history")] == ["promoted", "promoted", "promoted", "refused"]
    assert [i["outcome"] for i in ask("intents", "--as-of", after_first)] == ["promoted"]
    assert len(ask("state", "--as-of", after_first, "--at", "2026-11-24T01:00:00Z")[0]["run_starts"]) == 1
    assert len(ask("promotions", "--all", "--as-of", after_first)) == 1
    assert len(ask("promotions", "--all")) == 3
    assert [v["version"] for v in ask("baseline", "--as-of", after_first)["ws"]] == [1]
    events_then = runner.invoke(cli, [*base, "events", "--json", "--as-of", after_first]).output.splitlines()
    assert len(events_then) == positions[0]
    # a time works as well as a position: what the log held when the first run was recorded
    recorded = json.loads(events_then[-1])["recorded_at"]
    assert [r["status"] for r in ask("history", "--as-of", recorded)] == ["promoted"]
