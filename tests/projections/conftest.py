from __future__ import annotations

import sqlite3

import pytest

from tests.loop.conftest import Harness, settings_for

SCENARIOS = ("workstation-12gb-speech", "c-mistral7b-shared-24gb", "no-safe-fix")


@pytest.fixture(scope="module")
def healed_log(tmp_path_factory):
    """One real log with several healing runs on three deployments, each incident seen twice,
    and no snapshot in it (each test writes the ones it needs)."""
    path = tmp_path_factory.mktemp("healed") / "log.db"
    for scenario in SCENARIOS:
        h = Harness(path, settings_for(scenario), scenario)
        h.incident()
        h.incident()
        h.store.close()
    conn = sqlite3.connect(path)
    with conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'view_snapshots'").fetchone():
            conn.execute("DELETE FROM view_snapshots")  # the table is made by the first save
    conn.close()
    return path
