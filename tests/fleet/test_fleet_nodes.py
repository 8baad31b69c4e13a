"""Two nodes, each a `selfheal run --follow` named by $SELFHEAL_NODE, on one PostgreSQL log:
each run records the node that started it, and `history`, `state` and `show` answer for one
node (--node) or for the fleet."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")

from tests.fleet.nodes import Node, rows, wait_for  # noqa: E402

#: node -> (deployment, scenario): scenarios whose incident starts a run
NODES = {"east-1": ("a0", "workstation-12gb-speech"), "west-2": ("c2", "c-mistral7b-shared-24gb")}


def test_each_nodes_runs_carry_its_name_and_history_filters_by_it(tmp_path, pg_url):
    nodes = {name: Node(tmp_path / name, pg_url, f'mode = "dev"\n[deployments.{d}]\nscenario = "{s}"\n',
                        env={"SELFHEAL_NODE": name}) for name, (d, s) in NODES.items()}
    assert nodes["east-1"].selfheal("init").returncode == 0
    try:
        for node in nodes.values():
            node.start()
        for name, node in nodes.items():
            node.observe(*NODES[name])
        for deployment, _ in NODES.values():
            wait_for(lambda: rows(pg_url, "SELECT 1 FROM events WHERE type = 'IntentArchived' "
                                          "AND data::json->>'deployment' = %s", deployment))
    finally:
        for node in nodes.values():
            node.stop()
    for name, node in nodes.items():
        assert node.proc.returncode in (0, 130, -15), (name, (node.folder / "run.err").read_text()[-2000:])

    reader = nodes["east-1"]  # any node reads the whole fleet's log
    fleet = json.loads(reader.selfheal("history", "--json").stdout)
    assert sorted((r["deployment"], r["node"]) for r in fleet) == [("a0", "east-1"), ("c2", "west-2")]
    for name, (deployment, _) in NODES.items():
        mine = json.loads(reader.selfheal("history", "--json", "--node", name).stdout)
        assert [(r["deployment"], r["node"]) for r in mine] == [(deployment, name)]
        state = json.loads(reader.selfheal("state", "--json", "--node", name).stdout)
        assert [s["deployment"] for s in state] == [deployment]
        shown = reader.selfheal("show", mine[0]["run_id"])
        assert shown.returncode == 0, shown.stderr
        assert f"({deployment}) on node {name}: " in shown.stdout.splitlines()[0]
