"""Issue 16.3: `--as-of TIME` agrees with the times shown. A time copied from any line the tool
prints (`events`, `show`, `history`) and given to `--as-of` reads the log right after that
line's event, in the installed CLI as a person uses it."""
from __future__ import annotations

import json
import re

from selfheal.edges.sim import load_scenario, simulate
from tests.cli.installed import sh as run



def sh(cwd, *args):
    out = run(cwd, *args)
    assert out.returncode in (0, 3), out.stderr
    return out.stdout


def test_a_time_copied_from_a_line_reads_the_log_right_after_its_event(tmp_path):
    db = tmp_path / "demo.db"
    sh(tmp_path, "--db", db, "demo")
    rows = [json.loads(line) for line in sh(tmp_path, "--db", db, "events", "--json").splitlines()]
    started = next(r for r in rows if r["type"] == "RunStarted")
    shown = started["occurred_at"]
    # the text line of `events` shows that same time for it
    assert f"{started['position']:>7}  {shown}  RunStarted" in sh(tmp_path, "--db", db, "events")
    # the log as of that time holds the event (and those that occurred at that time too), not
    # only what was recorded by then
    as_of = [json.loads(line) for line in sh(tmp_path, "--db", db, "events", "--json", "--as-of", shown).splitlines()]
    assert started["position"] in [r["position"] for r in as_of]
    assert all(r["occurred_at"] <= shown or r["position"] < started["position"] for r in as_of)
    # the run, shown by `history` from a time copied from `show`, is there as of that time
    run = started["data"]["run_id"]
    assert shown in sh(tmp_path, "--db", db, "show", run[:8])
    assert run[:8] in sh(tmp_path, "--db", db, "history", "--as-of", shown)
    # and a moment before anything occurred, nothing is
    assert sh(tmp_path, "--db", db, "events", "--as-of", "2000-01-01T00:00:00Z").strip() == ""


def test_a_refused_runs_timeline_spells_every_time_one_way(tmp_path):
    """A refusal's reason names the run it waits for by its time: in the log's one spelling."""
    (tmp_path / "selfheal.toml").write_text('[deployments.chat]\nscenario = "workstation-12gb-speech"\n')
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    db = tmp_path / "s.db"
    sh(tmp_path, "--db", db, "heal", log)
    again = sh(tmp_path, "--db", db, "heal", "--force", log)  # inside the 6 h cooldown
    refused = next(line for line in again.splitlines() if "RunRefused" in line)
    assert "cooldown: 6 h after the run at " in refused and "+00:00" not in again, again
    times = re.findall(r"\d{4}-\d\d-\d\dT[\d:.+]+Z?", again)
    assert times and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t) for t in times), times
