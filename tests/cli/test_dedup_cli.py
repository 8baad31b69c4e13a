"""Deduplication by failure (issue 15.7), as a person meets it: the installed `selfheal`, run as
a subprocess on a real SQLite log. An intent that ended in an alert says until when a repeat
folds into it and how to retry sooner; `heal --force` retries at once, is recorded, and a
replay of the log decides exactly as the loop did."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from selfheal.cli import exits
from selfheal.edges.sim import load_scenario, simulate

SELFHEAL = shutil.which("selfheal", path=str(Path(sys.executable).parent)) or "selfheal"
SCENARIO = "no-safe-fix"   # the weights do not fit: every incident ends in an alert


def selfheal(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")}
    return subprocess.run([SELFHEAL, "--db", str(folder / "log.db"), "--config", str(folder / "selfheal.toml"), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_an_alert_says_when_to_retry_and_heal_force_retries_and_replays_the_same(tmp_path):
    (tmp_path / "selfheal.toml").write_text(f'[deployments.big]\nscenario = "{SCENARIO}"\n')
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario(SCENARIO)).log_text)

    first = selfheal(tmp_path, "heal", str(log))
    assert first.returncode == exits.NOT_HEALED, first.stderr
    (intent,) = re.findall(r"intent ([0-9a-f]{8}) for ", first.stdout)
    retry = re.search(r"\(retry: a repeat of this failure \(same kind, numbers within 10%\) until (\S+) folds into "
                      rf"intent {intent}; to retry sooner: selfheal heal --force LOG \(the rate limit still applies\)\)",
                      first.stdout)
    assert retry, first.stdout
    (listed,) = json.loads(selfheal(tmp_path, "intents", "--json").stdout)
    assert listed["dedupe_until"] == retry.group(1)  # the same time, queryable

    again = selfheal(tmp_path, "heal", str(log))
    assert f"folded into intent {intent}" in again.stdout and not re.search(r"intent \w{8} for ", again.stdout)

    forced = selfheal(tmp_path, "heal", "--force", str(log))
    assert forced.returncode == exits.NOT_HEALED
    assert "retry forced (heal --force)" in forced.stdout
    (new,) = re.findall(r"intent ([0-9a-f]{8}) for ", forced.stdout)
    assert new != intent
    reasons = {i["intent_id"][:8]: i["reason"] for i in json.loads(selfheal(tmp_path, "intents", "--json").stdout)}
    assert f"forced (heal --force): not folded into intent {intent}" in reasons[new]

    # the force is an event: a replay raises, folds and raises again, as the loop did
    replay = json.loads(selfheal(tmp_path, "replay", "--json").stdout)
    assert replay["incidents"] == 3 and replay["differing"] == 0, replay
    assert [r["replayed"]["intent"]["action"] for r in replay["results"]] == ["alert", "deduplicated", "alert"]
