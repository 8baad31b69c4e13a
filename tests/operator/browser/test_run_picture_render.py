"""The run picture (`selfheal show RUN --svg FILE`) rendered by a real browser: it parses as SVG,
and what chromium lays out fits: every text is drawn inside the picture, no label runs into the
bars, no bar into the outcome column. A screenshot is kept."""
from __future__ import annotations

import json
import re

import pytest

from selfheal.projections.run_picture import BARS
from tests.operator.conftest import selfheal

pytestmark = pytest.mark.browser

#: measures what the browser drew, into an attribute --dump-dom prints
MEASURE = """<script>
const svg = document.querySelector('svg');
const box = e => { const b = e.getBBox(); return {x: b.x, right: b.x + b.width, width: b.width}; };
const rows = [...svg.querySelectorAll('g[data-rank]')].map(g => ({
  texts: [...g.querySelectorAll('text')].map(t => ({cls: t.getAttribute('class'), text: t.textContent, ...box(t)})),
  bars: [...g.querySelectorAll('rect.phase')].map(box)}));
const texts = [...svg.querySelectorAll('text')].map(t => ({text: t.textContent, ...box(t)}));
document.body.setAttribute('data-measured', JSON.stringify({width: svg.viewBox.baseVal.width, rows, texts}));
</script>"""


def test_the_run_picture_renders_and_fits(tmp_path, browser):
    db = tmp_path / "demo.db"
    assert selfheal("--db", str(db), "demo").returncode == 0
    (run,) = json.loads(selfheal("--db", str(db), "history", "--json").stdout)
    picture = tmp_path / "run.svg"
    assert selfheal("--db", str(db), "show", run["run_id"], "--svg", str(picture)).returncode == 0

    alone = browser.dom(picture.as_uri())
    assert "error on line" not in alone and alone.lstrip().startswith("<svg")  # chromium's XML parser took it

    page = tmp_path / "measure.html"
    page.write_text(f"<!doctype html><html><body>{picture.read_text()}{MEASURE}</body></html>")
    found = re.search(r'data-measured="([^"]*)"', browser.dom(page.as_uri()))
    assert found, "the measuring script did not run"
    measured = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(measured["rows"]) == len(run["candidates"])
    for t in measured["texts"]:
        assert t["width"] > 0 and 0 <= t["x"] and t["right"] <= measured["width"], t
    for row in measured["rows"]:
        left = [t for t in row["texts"] if t["x"] < BARS]
        outcome = [t for t in row["texts"] if t["cls"].startswith("outcome")]
        (bar,) = row["bars"]
        assert bar["width"] > 2
        assert left and all(t["right"] <= BARS for t in left), left  # a candidate's labels end where bars begin
        assert all(bar["right"] <= t["x"] for t in outcome), (bar, outcome)
    browser.screenshot(picture.as_uri(), "run_picture.png", size=(1000, 260))
