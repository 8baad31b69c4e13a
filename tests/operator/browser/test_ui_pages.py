"""`selfheal ui` in a real browser: the installed CLI serves a demo's log on loopback and headless
chromium loads the events page, a run's timeline and a canned query through the printed token.
Each page's DOM is checked against the log itself, and a screenshot of each is kept."""
from __future__ import annotations

import json
import re
import sqlite3
from html.parser import HTMLParser

import pytest

from tests.operator.conftest import selfheal
from tests.operator.ui_server import Ui

pytestmark = pytest.mark.browser


class Table(HTMLParser):
    """The rows of datasette's result table: {column: text} per <tr>, columns from `col-NAME` classes;
    and the h1 and the column descriptions of the header."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: list[dict] = []
        self.descriptions: dict[str, str] = {}
        self.h1 = ""
        self._cell = self._in_h1 = None
        self._in_body = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        column = next((c[4:] for c in (attrs.get("class") or "").split() if c.startswith("col-")), None)
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({})
        elif tag == "td" and self._in_body and column and self.rows:
            self._cell = column
            self.rows[-1][column] = ""
        elif tag == "th" and column and attrs.get("data-column-description"):
            self.descriptions[column] = attrs["data-column-description"]
        elif tag == "h1":
            self._in_h1 = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._cell and self.rows:
            self.rows[-1][self._cell] += data
        if self._in_h1:
            self.h1 += data


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("ui") / "selfheal.db"
    assert selfheal("--db", str(db), "demo").returncode == 0
    (run,) = json.loads(selfheal("--db", str(db), "history", "--json").stdout)
    ui = Ui(db)
    yield ui, db, run
    assert ui.stop() == 130


def test_the_events_page(served, browser):
    ui, db, _ = served
    url = ui.url(f"/{ui.database}/events")
    page = Table(browser.dom(url))
    events = [json.loads(line) for line in selfheal("--db", str(db), "events", "--json").stdout.splitlines()]
    assert [(int(r["position"]), r["type"].strip()) for r in page.rows] == [(e["position"], e["type"]) for e in events]
    assert page.descriptions["hash"].startswith("SHA-256 over the previous row's hash")
    # each body laid out by the JSON plugin (indented), whole: bodies past 2,048 characters too
    assert page.rows[0]["data"].startswith('{\n    "type": "BaselineImported",')
    with sqlite3.connect(db) as conn:  # as stored: a sealed incident text stays sealed in the browser
        stored = [json.loads(data) for (data,) in conn.execute("SELECT data FROM events ORDER BY position")]
    assert [json.loads(r["data"]) for r in page.rows] == stored
    assert max(len(r["data"]) for r in page.rows) > 2048
    browser.screenshot(url, "events.png")


#: what chromium laid out of the events page: each column description's term and text, and the id cells
LAYOUT = """JSON.stringify({
  described: [...document.querySelectorAll('dl.column-descriptions dt')].map(dt => ({
    term: dt.getBoundingClientRect().top, text: dt.nextElementSibling.getBoundingClientRect().top,
    height: dt.nextElementSibling.getBoundingClientRect().height})),
  ids: [...document.querySelectorAll('td.col-event_id')].map(td => ({width: td.getBoundingClientRect().width,
    text: td.textContent.trim()})),
  em: parseFloat(getComputedStyle(document.querySelector('table')).fontSize)})"""


def test_the_events_page_keeps_its_header_short_and_ids_narrow(served, browser):
    """The column descriptions are one line each (datasette stacks each text under its name, 26
    lines before the table), and an id column is a few characters wide with the whole id in the
    page (36 characters a row otherwise push the bodies off the screen)."""
    ui, db, _ = served
    laid = json.loads(browser.evaluate(ui.url(f"/{ui.database}/events"), LAYOUT))
    assert len(laid["described"]) >= 10
    for d in laid["described"]:
        assert abs(d["term"] - d["text"]) < 4 and d["height"] < 2 * laid["em"], d  # beside its name, one line
    assert laid["ids"] and all(i["width"] <= 8 * laid["em"] for i in laid["ids"]), laid["ids"][:2]
    assert all(len(i["text"]) == 36 for i in laid["ids"])  # cut on the screen, whole in the page


def test_a_runs_timeline_view(served, browser):
    ui, db, run = served
    url = ui.url(f"/{ui.database}/run_timeline?run_id={run['run_id']}&_col=position&_col=type&_col=detail"
                 "&_col=candidate_id&_col=occurred_at")
    page = Table(browser.dom(url))
    with sqlite3.connect(db) as conn:
        expected = conn.execute("SELECT position, type, detail FROM run_timeline WHERE run_id = ? ORDER BY position",
                                (run["run_id"],)).fetchall()
    assert [(int(r["position"]), r["type"].strip(), r["detail"].strip()) for r in page.rows] == expected
    details = [r["detail"].strip() for r in page.rows]
    assert details[0] == "requested in dev mode" and "promoted after 2 canaries" in details
    assert page.h1.strip() == "run_timeline (view)"
    browser.screenshot(url, "run_timeline.png")


def test_a_canned_query_a_runs_chain(served, browser):
    ui, db, run = served
    url = ui.url(f"/{ui.database}/run_chain?run={run['run_id'][:8]}")
    page = Table(browser.dom(url))
    assert page.h1.strip() == "A run's chain"
    chain = [json.loads(line) for line in selfheal("--db", str(db), "events", "--correlation", run["correlation_id"],
                                                   "--json").stdout.splitlines()]
    first = next(e["position"] for e in chain if e["type"] == "RunRequested")
    assert [int(r["position"]) for r in page.rows] == [e["position"] for e in chain if e["position"] >= first]
    (promotion,) = [r["detail"] for r in page.rows if r["type"].strip() == "PromotionProposed"]
    assert re.fullmatch(rf"promotion {run['promotion_id'][:8]}, fitness [\d.]+", promotion.strip())
    browser.screenshot(url, "run_chain.png")
