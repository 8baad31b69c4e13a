"""One live runner per node name on a fleet's log: a second `selfheal run` started under a name
a live runner holds is refused at once, in one line naming the holder; the name is free again
once that runner stops; and a runner whose name passed to another records nothing more."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")

from tests.eventstore.contract import ev  # noqa: E402
from tests.fleet.nodes import Node, rows, wait_for  # noqa: E402

TOML = 'mode = "dev"\n[deployments.a0]\nscenario = "workstation-12gb-speech"\n'


def _live_holder(url: str, node: str) -> str | None:
    found = rows(url, "SELECT holder FROM leases WHERE name = %s AND expires_at > clock_timestamp()", f"node:{node}")
    return found[0][0] if found else None


def test_a_second_runner_under_a_live_nodes_name_is_refused_and_the_name_frees_when_it_stops(tmp_path, pg_url):
    first = Node(tmp_path / "first", pg_url, TOML, env={"SELFHEAL_NODE": "east-1"})
    second = Node(tmp_path / "second", pg_url, TOML)  # another host, or a container sharing its hostname
    assert first.selfheal("init").returncode == 0
    try:
        first.start()
        holder = wait_for(lambda: _live_holder(pg_url, "east-1"), timeout=60)
        assert holder.split(":")[1] == str(first.proc.pid)

        refused = second.selfheal("--node", "east-1", "run")
        assert refused.returncode == 1, refused
        (line,) = refused.stderr.splitlines()
        assert line.startswith("selfheal: error: ") and "node 'east-1' is already running" in line
        assert f"process {first.proc.pid} on host " in line and "--node" in line
        assert first.proc.poll() is None  # the runner that holds the name goes on

        other = second.selfheal("--node", "west-2", "run")  # another name on the same log runs
        assert other.returncode == 0, other.stderr
    finally:
        first.stop()
    assert first.proc.returncode in (0, 130, -15), (first.folder / "run.err").read_text()[-2000:]
    if first.proc.returncode != -15:  # a runner that stopped cleanly let its name go at once
        assert _live_holder(pg_url, "east-1") is None
    else:
        wait_for(lambda: _live_holder(pg_url, "east-1") is None, timeout=60)
    again = second.selfheal("--node", "east-1", "run")
    assert again.returncode == 0, again.stderr
    # runners that ended let their names go
    assert _live_holder(pg_url, "east-1") is None and _live_holder(pg_url, "west-2") is None


def test_a_runner_whose_node_name_passed_to_another_records_nothing_more(pg_url):
    from selfheal.eventstore.postgres import LeaseLost, PostgresRecorder
    from selfheal.eventstore.store import EventStore
    from selfheal.handlers.leases import node_claimed

    with PostgresRecorder(pg_url, create=True) as recorder, PostgresRecorder(pg_url) as other:
        with node_claimed(EventStore(recorder), "east-1"):
            recorder.append("s", [ev(1)])
            # the runner stalled past its lease (its renewals stopped): the name expires, another takes it
            other._conn.execute("UPDATE leases SET expires_at = clock_timestamp() - interval '1 second' "
                                "WHERE name = 'node:east-1'")
            assert other.acquire_lease("node:east-1", f"elsewhere:{os.getpid() + 1}:0", 30) == 2
            with pytest.raises(LeaseLost, match="node:east-1 passed to another runner"):
                recorder.append("s", [ev(2)])
        assert recorder.fence == {} and other.last_position() == 1


def test_a_file_log_needs_no_claim(tmp_path):
    """Runners of a file take turns through its lock on one host: no lease table, no claim."""
    from selfheal.eventstore.store import EventStore
    from selfheal.eventstore.sqlite import SQLiteRecorder
    from selfheal.handlers.leases import node_claimed

    with SQLiteRecorder(tmp_path / "log.db", create=True) as recorder:
        store = EventStore(recorder)
        with node_claimed(store, "east-1"), node_claimed(store, "east-1"):
            assert store.recorder.last_position() == 0
