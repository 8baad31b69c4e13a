"""Crash anywhere: SIGKILL `selfheal run` at every event boundary of a whole healing run and
inside its effects, restart it, and compare with a run nobody killed.

The run (tests/reliability/crash_world.py): a real incident of the workstation scenario, the
seed canary fails, a tournament candidate passes, the promotion is committed to the vLLM YAML
and production is reloaded. Canaries are real processes (the faithful fake vLLM), the YAML
is really written, the reload is a real restart command. Each kill point gets a fresh world;
the process kills itself with SIGKILL at that point (tests/reliability/crashpoint.py), then a
plain `selfheal run` finishes the job. Invariants, each against the uninterrupted run:

- the log: the same events in the same order (recovery records aside: a re-launched canary's
  CanaryLaunched and CanaryOrphanReaped), every event id once, positions gap-free, the hash
  chain intact; the same runs, candidates, outcomes, baselines and rate-limit budget (one run
  spent, none left open);
- effects: the YAML written once per commit, never twice (a write is skipped when the file
  already holds the new bytes), ending byte-equal with `.previous` holding the original;
  exactly one completed canary per candidate; a canary server started again only for a kill
  inside that canary, and only after the one the crash left behind was reaped (no canary
  process survives the restarted run; for a kill between a server's start and its
  CanaryLaunched record, the marker in its environment is what finds it); a reload repeated at most once, and only by a kill that landed
  after the restart command started and before its result was recorded.

What is NOT exactly-once, by design: a canary or a reload whose result a crash prevented from
being recorded is performed again. Its result was lost; re-running it is the only way to
learn it. Both are safe to repeat (a canary never touches production; a reload restarts the
same, already-written config).

The default suite kills at every transaction that appends events and at every effect; the
`slow` tier (run by .ci/run) also kills after every checkpoint-only transaction: all of them.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from selfheal.edges.processes import marked_processes
from selfheal.handlers import flow
from selfheal.handlers.runtime import Activity
from tests.reliability.crash_world import World

#: handlers whose work is an effect outside the log: just before their transaction, the effect is done
EFFECTS = {cls.name for cls in flow.LOOP if issubclass(cls, Activity)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("crash") / "reference").create()
    world.observe()
    counts = world.folder / "counts.json"
    done = world.selfheal("run", counts=counts)
    assert done.returncode == 0, done.stderr
    recorded = json.loads(counts.read_text())
    outcome = world.outcome()
    assert outcome["runs"][0]["status"] == "promoted" and outcome["runs"][0]["canaries"] == 2
    effects = world.effects()
    assert (effects["canary_servers"], effects["config_writes"], effects["reloads"]) == (2, 1, 1)
    return {"outcome": outcome, "effects": effects, **recorded, "root": world.folder.parent}


def kill_points(reference: dict, every_commit: bool) -> list[str]:
    commits, reached = reference["commits"], reference["reached"]
    points = []
    for n, commit in enumerate(commits, start=1):
        if every_commit or commit["types"]:
            points.append(f"after-commit:{n}")
        # inside an effect: its work is done, its record not yet written
        if (commit["handler"] in EFFECTS and (every_commit or commit["types"])) or commit["handler"] is None:
            points.append(f"before-commit:{n}")
    for where, counter in (("in-canary", "canary"), ("in-replace", "replace"), ("in-reload", "reload")):
        points += [f"{where}:{i}" for i in range(1, reached.get(counter, 0) + 1)]
    return points


def reload_may_repeat(point: str, commits: list[dict]) -> bool:
    where, _, n = point.partition(":")
    return where == "in-reload" or (where == "before-commit" and commits[int(n) - 1]["handler"] == "reload-verify")


def inside_a_canary(point: str, commits: list[dict]) -> bool:
    """Whether the kill falls between a canary server's start and the record of its result."""
    where, _, n = point.partition(":")
    if where == "in-canary":
        return True
    if where not in ("before-commit", "after-commit"):
        return False
    commit = commits[int(n) - 1]
    launched = "CanaryLaunched" in commit["types"]
    return launched or (where == "before-commit" and commit["handler"] == "canary-run")


def crash_and_recover(reference: dict, point: str, sweep_name: str) -> list[str]:
    """Kill at `point`, restart, and return every invariant that does not hold (empty: all hold)."""
    folder = reference["root"] / sweep_name / point.replace(":", "-")
    assert not folder.exists(), f"{folder}: a world is used once"
    world = World(folder).create()
    world.observe()
    killed = world.selfheal("run", crash=point)
    if killed.returncode != -9:
        return [f"{point}: never reached (exit {killed.returncode}): {killed.stderr[-500:]}"]
    restarted = world.selfheal("run")
    if restarted.returncode != 0:
        return [f"{point}: the restart failed (exit {restarted.returncode}): {restarted.stderr[-500:]}"]
    problems = []
    outcome, expected = world.outcome(), dict(reference["outcome"])
    reaped, canary_ids = outcome.pop("orphans_reaped"), outcome.pop("canary_ids")
    expected.pop("orphans_reaped"), expected.pop("canary_ids")
    for key in expected:
        if outcome[key] != expected[key]:
            problems.append(f"{point}: {key} differs from the uninterrupted run: {_short(outcome[key], expected[key])}")
    effects, base = world.effects(), reference["effects"]
    for key in ("yaml", "previous", "config_writes"):
        if effects[key] != base[key]:
            problems.append(f"{point}: {key}: {effects[key]!r} != {base[key]!r}")
    extra_servers = effects["canary_servers"] - base["canary_servers"]
    if not (extra_servers == 0 or (extra_servers == 1 and inside_a_canary(point, reference["commits"]))):
        problems.append(f"{point}: {effects['canary_servers']} canary servers started, expected "
                        f"{base['canary_servers']} (one more only for a kill inside a canary)")
    if reaped > extra_servers:
        problems.append(f"{point}: {reaped} orphans reaped but {extra_servers} extra servers started")
    survivors = {cid: pids for cid in canary_ids if (pids := marked_processes(cid))}
    if survivors:
        problems.append(f"{point}: canary processes outlived the run: {survivors}")
        for pid in (pid for pids in survivors.values() for pid in pids):  # the failure must not leak
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    extra_reloads = effects["reloads"] - base["reloads"]
    if not (extra_reloads == 0 or (extra_reloads == 1 and reload_may_repeat(point, reference["commits"]))):
        problems.append(f"{point}: {effects['reloads']} reloads, expected {base['reloads']}")
    return problems


def _short(got, expected) -> str:
    if isinstance(got, list) and isinstance(expected, list):
        at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        return f"first difference at item {at}: {got[at:at + 3]} != {expected[at:at + 3]}"
    return f"{str(got)[:300]} != {str(expected)[:300]}"


def sweep(reference: dict, every_commit: bool) -> None:
    points = kill_points(reference, every_commit)
    name = "every-transaction" if every_commit else "every-event"
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        results = list(pool.map(lambda p: crash_and_recover(reference, p, name), points))
    problems = [p for found in results for p in found]
    kinds: dict[str, int] = {}
    for p in points:
        kinds[p.split(":")[0]] = kinds.get(p.split(":")[0], 0) + 1
    print(json.dumps({"kill_points": len(points), "by_kind": kinds,
                      "transactions_in_a_run": len(reference["commits"]), "problems": len(problems)}))
    assert not problems, "\n".join(problems)


def test_sigkill_at_every_event_and_inside_every_effect(reference):
    sweep(reference, every_commit=False)


@pytest.mark.slow
def test_sigkill_after_every_transaction(reference):
    sweep(reference, every_commit=True)
