"""The run picture (`selfheal show RUN --svg FILE`) rendered by a real browser: it parses as SVG,
and what chromium lays out fits: every text is drawn inside the picture, no label runs into the
bars, no bar into the outcome column, no text over another or over a bar not its own. The demo's
run, and a run shaped as real ones are: canaries of 2 s and 640 s side by side, four knobs
changed, the longest failure kind, a pre-flight reason longer than any column. Screenshots kept."""
from __future__ import annotations

import json
import re

import pytest

from selfheal.projections.run_picture import picture as draw, svg
from selfheal.schemas.events import (
    CanaryCompleted, CanaryMeasurements, CanaryStarted, CandidateScored, PreflightRejected, RunFinished, RunStarted,
)
from tests.operator.conftest import selfheal
from tests.operator.test_run_picture import CONFIG, at, candidate

pytestmark = pytest.mark.browser

#: measures what the browser drew, into an attribute --dump-dom prints
MEASURE = """<script>
const svg = document.querySelector('svg');
const box = e => { const b = e.getBBox();
  return {x: b.x, right: b.x + b.width, width: b.width, y: b.y, bottom: b.y + b.height}; };
const rows = [...svg.querySelectorAll('g[data-rank]')].map(g => ({
  texts: [...g.querySelectorAll('text')].map(t => ({cls: t.getAttribute('class'), text: t.textContent, ...box(t)})),
  bars: [...g.querySelectorAll('rect.phase')].map(box)}));
const texts = [...svg.querySelectorAll('text')].map(t => ({text: t.textContent, ...box(t)}));
document.body.setAttribute('data-measured', JSON.stringify({width: svg.viewBox.baseVal.width, rows, texts,
  bars: +svg.dataset.bars, outcomes: +svg.dataset.outcomes}));
</script>"""


def measure(browser, picture) -> dict:
    """What chromium drew of the SVG file `picture`: every text's and bar's box, by row."""
    alone = browser.dom(picture.as_uri())
    assert "error on line" not in alone and alone.lstrip().startswith("<svg")  # chromium's XML parser took it
    page = picture.with_suffix(".html")
    page.write_text(f"<!doctype html><html><body>{picture.read_text()}{MEASURE}</body></html>")
    found = re.search(r'data-measured="([^"]*)"', browser.dom(page.as_uri()))
    assert found, "the measuring script did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["right"] and b["x"] < a["right"] and a["y"] < b["bottom"] and b["y"] < a["bottom"]


def assert_fits(measured: dict) -> None:
    bars, outcomes = measured["bars"], measured["outcomes"]
    for t in measured["texts"]:
        assert t["width"] > 0 and 0 <= t["x"] and t["right"] <= measured["width"], t
    for row in measured["rows"]:
        left = [t for t in row["texts"] if t["x"] < bars and not t["cls"].startswith("phase-label")]
        outcome = [t for t in row["texts"] if t["cls"].startswith("outcome")]
        assert left and all(t["right"] <= bars for t in left), left  # a candidate's labels end where bars begin
        for bar in row["bars"]:
            assert bar["width"] >= 2 and bar["right"] <= outcomes and all(bar["right"] <= t["x"] for t in outcome)
        texts = row["texts"]
        for i, a in enumerate(texts):  # no text over another: each is read whole
            assert not any(_overlap(a, b) for b in texts[i + 1:]), (a, [b for b in texts[i + 1:] if _overlap(a, b)])
        for t in texts:  # a bar's label sits inside it (white on the colour) or clear of every bar
            inside = [b for b in row["bars"] if b["x"] <= t["x"] and t["right"] <= b["right"]]
            assert t["cls"] == "phase-label" and inside or not any(_overlap(t, b) for b in row["bars"]), (t, row["bars"])


def test_the_run_picture_renders_and_fits(tmp_path, browser):
    db = tmp_path / "demo.db"
    assert selfheal("--db", str(db), "demo").returncode == 0
    (run,) = json.loads(selfheal("--db", str(db), "history", "--json").stdout)
    picture = tmp_path / "run.svg"
    assert selfheal("--db", str(db), "show", run["run_id"], "--svg", str(picture)).returncode == 0
    measured = measure(browser, picture)
    assert len(measured["rows"]) == len(run["candidates"])
    assert all(len(row["bars"]) == 1 for row in measured["rows"])
    assert_fits(measured)
    browser.screenshot(picture.as_uri(), "run_picture.png", size=(round(measured["width"]), 260))


def real_shaped_run() -> list:
    """An escalated run as real vLLM canaries make one: a startup refused in 2 s beside a
    640 s graph-capture failure, load failures of 3 s and 300 s, four knobs changed at once,
    and a pre-flight rejection whose reason is longer than any column."""
    m = CanaryMeasurements
    tried = [
        ({"gpu_memory_utilization": 0.65, "max_num_seqs": 4, "max_model_len": 6656, "max_num_batched_tokens": 4096},
         m(started=False, passed_load=False, failure_kind="startup_free_memory_below_utilization",
           failure_stage="startup", duration_s=2.0)),
        ({"gpu_memory_utilization": 0.7}, m(started=False, passed_load=False, failure_kind="cuda_graph_capture_oom",
                                            failure_stage="startup", duration_s=640.0)),
        ({"max_num_seqs": 8, "max_model_len": 4096}, m(started=True, passed_load=False, failure_stage="load",
                                                       failure_kind="co_tenant_oom_killed_under_load", duration_s=3.0)),
        ({"gpu_memory_utilization": 0.62, "max_num_seqs": 2}, m(started=True, passed_load=False, failure_stage="load",
                                                                failure_kind="preemption_storm", duration_s=300.0)),
    ]
    deployment = "qwen25-72b-instruct-long-context-prod"
    events = [RunStarted(run_id="r1", intent_id="n1", deployment=deployment, mode="prod", current=CONFIG,
                         environment="e")]
    times, t = [0.0], 0.0
    for rank, (changes, measured) in enumerate(tried):
        c = candidate(rank, **changes)
        events += [c, CanaryStarted(run_id="r1", candidate_id=c.candidate_id, canary_id=f"k{rank}", backend="vllm",
                                    simulated=False)]
        times += [t, t]
        t += measured.duration_s
        events += [CanaryCompleted(run_id="r1", candidate_id=c.candidate_id, canary_id=f"k{rank}", backend="vllm",
                                   simulated=False, measurements=measured),
                   CandidateScored(run_id="r1", candidate_id=c.candidate_id, passed=False, fitness=None,
                                   reason=measured.failure_kind)]
        times += [t, t]
    rejected = candidate(4, max_num_seqs=1)
    events += [rejected, PreflightRejected(
        run_id="r1", candidate_id=rejected.candidate_id, required_bytes=1, free_bytes=0, margin_bytes=0, snapshot=[],
        reason="needs 71.32 GiB of 64.10 GiB free on GPU 0 (margin 1.50 GiB; a co-tenant holds 12.4 GiB) and "
               "70.90 GiB of 64.20 GiB free on GPU 1"),
        RunFinished(run_id="r1", deployment=deployment, outcome="escalated", succeeded=False, canaries=4)]
    times += [t, t, t]
    return [at(i + 1, e, s) for i, (e, s) in enumerate(zip(events, times))]


def test_a_real_shaped_runs_picture_fits_every_text_where_it_can_be_read(tmp_path, browser):
    picture = tmp_path / "escalated.svg"
    picture.write_text(svg(draw("r1", real_shaped_run())))
    measured = measure(browser, picture)
    assert [len(row["bars"]) for row in measured["rows"]] == [1, 1, 1, 1, 0]
    texts = [t["text"] for t in measured["texts"]]
    assert "failed at startup: startup_free_memory_below_utilization" in texts  # whole, not cut at the edge
    assert "gpu_memory_utilization 0.9\u21920.65, max_num_seqs 16\u21924, max_model_len 8192\u21926656, " \
           "max_num_batched_tokens 2048\u21924096" in texts
    assert {"startup 2 s", "startup + load 3 s", "startup + load 300 s", "startup 640 s"} <= set(texts)
    assert any(t.startswith("pre-flight: needs 71.32 GiB") and t.endswith("\u2026") for t in texts)  # cut, not off
    assert_fits(measured)
    browser.screenshot(picture.as_uri(), "run_picture_escalated.png", size=(round(measured["width"]), 380))
