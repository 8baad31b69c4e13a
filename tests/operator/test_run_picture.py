"""The run picture (projections/run_picture.py, `selfheal show RUN --svg FILE`), read back with
xml.etree: a row per candidate, its canary's bar and time, the outcome, fitness and promotion
as the log records them. Rendering in a real browser is tests/operator/browser/."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import selfheal as api
from selfheal.eventstore.recorder import utc_iso
from selfheal.eventstore.store import Recorded
from selfheal.projections.run_picture import picture, svg
from selfheal.schemas.events import (
    CanaryCompleted, CanaryMeasurements, CanaryStarted, CandidateProposed, CandidateScored, PreflightRejected,
    RunFinished, RunStarted,
)
from selfheal.schemas.serving import ServingConfig
from tests.operator.conftest import selfheal

NS = {"svg": "http://www.w3.org/2000/svg"}


def read(text: str) -> dict:
    """What a reader of the picture sees: title, and per candidate row its texts and bars."""
    root = ET.fromstring(text)
    title = "".join(root.find("svg:text[@class='title']", NS).itertext())
    found = []
    for g in root.iterfind("svg:g[@data-rank]", NS):
        found.append({
            "rank": int(g.get("data-rank")), "outcome": g.get("data-outcome"), "candidate": g.get("data-candidate"),
            "texts": ["".join(t.itertext()) for t in g.iterfind("svg:text", NS)],
            "bars": [(r.get("data-phase"), float(r.get("data-seconds")), float(r.get("x")), float(r.get("width")))
                     for r in g.iterfind("svg:rect[@class='phase']", NS)],
            "promoted": g.find("svg:rect[@class='promotion-mark']", NS) is not None,
        })
    notes = ["".join(t.itertext()) for t in root.iterfind("svg:text[@class='note']", NS)]
    return {"title": title, "rows": found, "notes": notes}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    db = tmp_path_factory.mktemp("picture") / "demo.db"
    assert selfheal("--db", str(db), "demo").returncode == 0
    (run,) = json.loads(selfheal("--db", str(db), "history", "--json").stdout)
    return db, run


def test_show_svg_draws_each_candidate_as_the_log_records_it(demo, tmp_path):
    db, run = demo
    out = tmp_path / "run.svg"
    shown = selfheal("--db", str(db), "show", run["run_id"][:8], "--svg", str(out))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"run {run['run_id']}")  # the chain is still printed
    seen = read(out.read_text())
    assert seen["title"] == f"run {run['run_id'][:8]} · {run['deployment']} · promoted after 2 canaries"
    assert [r["candidate"] for r in seen["rows"]] == [c["candidate_id"] for c in run["candidates"]]
    end = 0.0
    for row, c in zip(seen["rows"], run["candidates"]):
        m = c["canary"]
        assert row["outcome"] == ("passed" if c["passed"] else "failed")
        ((phase, seconds, x, width),) = row["bars"]
        assert seconds == m["duration_s"]
        assert phase == ("startup + load" if m["started"] else "startup")
        assert x >= end - 0.1  # canaries one after another, in rank order
        end = x + width
        assert f"#{c['rank']} {c['origin']}" in row["texts"]
        assert row["promoted"] == (c["config"] == run["promoted"])
    failed, passed = seen["rows"]
    assert any(m_text.endswith(f"failed at startup: {run['candidates'][0]['canary']['failure_kind']}")
               for m_text in failed["texts"])
    assert f"★ promoted · passed · fitness {run['candidates'][1]['fitness']:g}" in passed["texts"]
    assert seen["notes"][-3].startswith("promotion ") and "not committed" in seen["notes"][-3]


def test_svg_to_standard_output_is_the_picture_alone_and_the_same_every_time(demo):
    db, run = demo
    first = selfheal("--db", str(db), "show", run["run_id"], "--svg", "-")
    assert first.returncode == 0 and first.stdout.startswith("<svg ") and ET.fromstring(first.stdout) is not None
    assert api.run_picture(run["run_id"], db=db) == first.stdout  # drawn again, in this process: the same bytes


def test_an_unknown_run_is_a_usage_error(demo, tmp_path):
    db, _ = demo
    missing = selfheal("--db", str(db), "show", "ffffffff", "--svg", str(tmp_path / "x.svg"))
    assert missing.returncode == 2 and "no such run" in missing.stderr
    assert not (tmp_path / "x.svg").exists()


# -- the pure function, on events of shapes the demo does not make ----------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
CONFIG = ServingConfig(gpu_memory_utilization=0.9, max_model_len=8192, max_num_seqs=16)


def at(position: int, event, seconds: float = 0.0) -> Recorded:
    when = utc_iso(T0 + timedelta(seconds=seconds))
    return Recorded(position=position, event_id=f"e{position}", stream="run-r1", version=position,
                    occurred_at=when, recorded_at=when, correlation_id="i1", causation_id=None, event=event)


def candidate(rank: int, run_id: str = "r1", **changes) -> CandidateProposed:
    return CandidateProposed(run_id=run_id, candidate_id=f"c{rank}", deployment="chat", config=CONFIG.changed(**changes),
                             changes={k: [getattr(CONFIG, k), v] for k, v in changes.items()},
                             origin="seed" if rank == 0 else "tournament", rank=rank)


def test_a_real_runs_clock_a_rejection_a_load_failure_and_no_promotion():
    load_failed = CanaryMeasurements(started=True, passed_load=False, failure_kind="preemption_storm",
                                     failure_stage="load", duration_s=90.0)
    events = [
        at(1, RunStarted(run_id="r1", intent_id="n1", deployment="chat", mode="dev", current=CONFIG, environment="e")),
        at(2, candidate(0, gpu_memory_utilization=0.8)),
        at(3, PreflightRejected(run_id="r1", candidate_id="c0", reason="needs 9.1 GiB, 8.0 free", required_bytes=1,
                                free_bytes=0, margin_bytes=0, snapshot=[])),
        at(4, candidate(1, max_num_seqs=8)),
        at(5, CanaryStarted(run_id="r1", candidate_id="c1", canary_id="k1", backend="vllm", simulated=False), 30.0),
        at(6, CanaryCompleted(run_id="r1", candidate_id="c1", canary_id="k1", backend="vllm", simulated=False,
                              measurements=load_failed), 120.0),
        at(7, CandidateScored(run_id="r1", candidate_id="c1", passed=False, fitness=None, reason="preemptions")),
        at(8, candidate(0, run_id="r2", max_num_seqs=4)),  # another run's: not drawn
        at(9, RunFinished(run_id="r1", deployment="chat", outcome="escalated", succeeded=False, canaries=1), 121.0),
    ]
    pic = picture("r1", events)
    assert [(r.rank, r.outcome) for r in pic.rows] == [(0, "rejected"), (1, "failed")]
    assert pic.rows[1].phases[0].start_s == 30.0  # its CanaryStarted came 30 s into the run
    seen = read(svg(pic))
    assert seen["title"] == "run r1 · chat · escalated after 1 canary"
    rejected, failed = seen["rows"]
    assert rejected["bars"] == [] and "pre-flight: needs 9.1 GiB, 8.0 free" in rejected["texts"]
    assert "no canary" in rejected["texts"]
    assert [b[:2] for b in failed["bars"]] == [("startup + load", 90.0)]
    assert "failed under load: preemption_storm" in failed["texts"]
    assert not any(r["promoted"] for r in seen["rows"]) and "no promotion" in seen["notes"]
    assert svg(picture("r1", reversed(events))) == svg(pic)  # log order, whatever order given


def _without_ids(text: str) -> str:
    text = re.sub(r'data-candidate="[0-9a-f-]{36}"', 'data-candidate="ID"', text)
    return re.sub(r"\b(run|promotion) [0-9a-f]{8}\b", r"\1 ID", text)


def test_the_readmes_picture_is_a_demo_runs_as_this_build_draws_it(demo):
    """docs/run.svg (the README's picture) is `show --svg` of a real `selfheal demo` run; only the
    random ids may differ. When the simulator or the search changes the demo, redraw it:
    selfheal --db /tmp/d.db demo && selfheal --db /tmp/d.db show RUN --svg docs/run.svg"""
    db, run = demo
    fresh = api.run_picture(run["run_id"], db=db)
    committed = (Path(__file__).parents[2] / "docs" / "run.svg").read_text()
    assert _without_ids(committed) == _without_ids(fresh)
