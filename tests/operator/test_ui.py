"""`selfheal ui` over HTTP on loopback, without a browser: the token gate, the shipped metadata,
the views an older log gets, and the plain refusal when datasette is missing. What the pages
look like in a browser is tests/operator/browser/."""
from __future__ import annotations

import json
import sqlite3

import pytest

from selfheal.eventstore.sqlite_views import VIEWS
from tests.operator.conftest import selfheal
from tests.operator.ui_server import Ui, status


@pytest.fixture
def log_without_views(tmp_path):
    """A demo's log as a build before the views left it."""
    db = tmp_path / "old.db"
    assert selfheal("--db", str(db), "demo").returncode == 0
    with sqlite3.connect(db) as conn:
        for name in reversed(list(VIEWS)):
            conn.execute(f"DROP VIEW {name}")
    return db


def views(db) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}


def test_only_a_browser_with_the_printed_token_gets_in(log_without_views):
    ui = Ui(log_without_views)
    try:
        assert ui.database == "old" and views(log_without_views) == set(VIEWS)  # made before serving
        assert status(ui.url("/old/events.json", token=False))[0] == 403
        assert status(ui.url("/old/events.json", token=False), cookie="selfheal_ui=guess")[0] == 403
        assert status(f"{ui.base}/old/events.json?token=guess")[0] == 403
        code, headers, _ = status(ui.url("/old/events.json?_shape=array&type=RunFinished"))
        assert code == 302 and headers["location"] == "/old/events.json?_shape=array&type=RunFinished"
        cookie = headers["set-cookie"].split(";")[0]
        code, _, body = status(f"{ui.base}{headers['location']}", cookie=cookie)
        assert code == 200 and [row["type"] for row in json.loads(body)] == ["RunFinished"]
        # the shipped metadata: internal tables hidden, canned queries, column descriptions
        code, _, body = status(f"{ui.base}/old.json", cookie=cookie)
        tables = {t["name"]: t for t in json.loads(body)["tables"]}
        assert {n for n, t in tables.items() if t["hidden"]} == {"handler_checkpoints", "keys"}
        code, _, body = status(f"{ui.base}/-/metadata.json", cookie=cookie)
        meta = json.loads(body)["databases"]["old"]
        assert set(meta["queries"]) == {"run_chain", "deployment_history", "what_failed_where"}
        assert set(meta["tables"]["candidates"]["columns"]) >= {"predicted_fitness", "fitness", "failure_kind"}
        # read-only: datasette's connection cannot write, whatever SQL it is given
        code, _, body = status(f"{ui.base}/old.json?sql=delete+from+keys", cookie=cookie)
        assert code == 400 and b"Statement must be a SELECT" in body
    finally:
        assert ui.stop() == 130  # SIGTERM: a stop, as every command


def test_without_datasette_it_says_so_and_touches_nothing(log_without_views, tmp_path):
    shim = tmp_path / "no-datasette"
    (shim / "datasette").mkdir(parents=True)
    (shim / "datasette" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'datasette'\", name='datasette')\n")
    done = selfheal("--db", str(log_without_views), "ui", env={"PYTHONPATH": str(shim)})
    assert done.returncode == 1, done.stderr
    assert done.stderr == ("selfheal: error: `selfheal ui` needs datasette, which is not installed (no module "
                           "'datasette'): pip install 'vllm-selfheal[ui]'\n")
    assert views(log_without_views) == set()


def test_a_postgresql_log_is_refused_plainly():
    done = selfheal("--db", "postgresql://nobody@127.0.0.1:1/none", "ui")
    assert done.returncode == 1
    assert "datasette does not read PostgreSQL" in done.stderr and done.stderr.count("\n") == 1
