"""The commands users run by hand print their text timeline on a server log too: `heal` and
`demo` follow the log as it is recorded, which on a postgresql:// log has no file to look for."""
from __future__ import annotations

from tests.fleet.nodes import Node

CHAT = '[deployments.chat]\nscenario = "workstation-12gb-speech"\n'


def test_heal_prints_its_timeline_and_outcome_on_a_server_log(tmp_path, pg_url):
    node = Node(tmp_path / "n0", pg_url, CHAT)
    log = node.folder / "vllm.log"
    log.write_text("(EngineCore_DP0 pid=4242) ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device "
                   "cuda:0 (8.41/11.66 GiB) on startup is less than desired GPU memory utilization (0.9, 10.49 GiB). "
                   "Decrease GPU memory utilization or reduce GPU memory used by other processes.\n")
    done = node.selfheal("heal", "--deployment", "chat", str(log))
    assert done.returncode in (0, 3), done.stderr  # healed, or not healed: both told, neither a crash
    assert "unexpected" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("outcome:"), done.stdout
    assert len(lines) > 5 and any("canary" in line for line in lines), done.stdout  # the timeline, line by line
