"""Four nodes, four deployments, one PostgreSQL log: they heal at once, and a configuration
that failed on one node is never tried on another node in the same environment."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")

from tests.fleet.nodes import Node, rows, wait_for  # noqa: E402

#: node -> (deployment, scenario); a0 and a1 run the same card, model and co-tenants
NODES = {"n0": ("a0", "workstation-12gb-speech"), "n1": ("a1", "workstation-12gb-speech"),
         "n2": ("c2", "c-mistral7b-shared-24gb"), "n3": ("b3", "b-qwen7b-16gb")}


def _finished(url: str, deployment: str) -> list:
    """The deployment's intent archived: every intent ends so, healed, escalated or refused."""
    return rows(url, "SELECT data FROM events WHERE type = 'IntentArchived' AND data::json->>'deployment' = %s",
                deployment)


def test_four_nodes_heal_four_deployments_at_once_and_share_what_failed(tmp_path, pg_url):
    nodes = {name: Node(tmp_path / name, pg_url, f'mode = "dev"\n[deployments.{d}]\nscenario = "{s}"\n',
                        env={"SELFHEAL_NODE": name})  # one host plays four nodes: each its own name
             for name, (d, s) in NODES.items()}
    assert nodes["n0"].selfheal("init").returncode == 0
    try:
        for node in nodes.values():
            node.start()
        for name in ("n0", "n2", "n3"):
            nodes[name].observe(*NODES[name])
        # every runner leases its own deployment (a lease is held while a poll works, released after)
        wait_for(lambda: len(rows(pg_url, "SELECT name FROM leases WHERE name LIKE 'deployment:%%'")) == 4,
                 timeout=60)
        wait_for(lambda: _finished(pg_url, "a0"))
        nodes["n1"].observe(*NODES["n1"])  # the same failure on the twin node, after a0's run
        for deployment, _ in NODES.values():
            wait_for(lambda: _finished(pg_url, deployment))
    finally:
        for node in nodes.values():
            node.stop()
    for name, node in nodes.items():
        assert node.proc.returncode in (0, 130, -15), (name, (node.folder / "run.err").read_text()[-2000:])
    holders = {holder.rsplit(":", 2)[1] for (holder,) in rows(pg_url, "SELECT holder FROM leases")}
    assert holders == {str(node.proc.pid) for node in nodes.values()}  # each deployment leased by its node

    history = {r["deployment"]: r for r in json.loads(nodes["n0"].selfheal("history", "--json").stdout)}
    assert {"a0", "a1", "c2"} <= set(history)  # one log answers for the fleet (b3's escalates before a run)
    a0, a1 = history["a0"], history["a1"]
    assert a0["environment"] == a1["environment"]
    failed_on_a0 = [c["config"] for c in a0["candidates"] if c["canary"] and not c["passed"]]
    assert failed_on_a0, "the scenario's seed fix fails its canary on a0: the premise of this test"
    assert not [c for c in a1["candidates"] if c["config"] in failed_on_a0], "a1 tried what failed on a0"
    assert a1["status"] == "promoted"
    # each incident handled once, by its own node: one intent archived per deployment
    archived = rows(pg_url, "SELECT data::json->>'deployment', count(*) FROM events WHERE type = 'IntentArchived' "
                            "GROUP BY 1")
    assert dict(archived) == {d: 1 for d, _ in NODES.values()}
    assert nodes["n0"].selfheal("verify").returncode == 0
