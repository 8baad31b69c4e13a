"""The world the crash-anywhere harness kills selfheal in: one folder with a deployment whose
canaries are real processes (the faithful fake vLLM on a simulator scenario), whose vLLM YAML
is really written, and whose reload is a real restart command; plus what is needed to count
every effect from the outside and to compare one run's end state with another's.

Each effect leaves a trace that selfheal does not write itself:
- canary servers started: one line each in `launches.log` (FAKE_VLLM_LAUNCH_LOG);
- config files put in place: one line per rename in `renames.log`, journalled by the
  crash-point wrapper right after the rename (tests/reliability/crashpoint.py);
- reloads: one line each in `reloads.log`, written by the restart command.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import open_store
from selfheal import projections
from tests.fakes.deployment import fake_vllm_deployment

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "workstation-12gb-speech"
YAML = """# the speech box's server; selfheal owns only the tunable keys
model: fake-model
gpu-memory-utilization: 0.9
max-model-len: 8192     # what the app needs
max-num-seqs: 16
max-num-batched-tokens: 2048
"""
RELOAD = """import sys, time
with open(sys.argv[1], "a") as f:
    f.write("reload\\n")
time.sleep(0.3)  # a restart takes a moment: room for a kill while it runs
"""
#: events written because a crash happened; the harness counts them instead of comparing them
RECOVERY_EVENTS = {"CanaryOrphanReaped"}


class World:
    def __init__(self, folder: Path):
        self.folder = folder
        self.db, self.toml, self.yaml = folder / "log.db", folder / "selfheal.toml", folder / "vllm.yaml"
        self.launches, self.reloads = folder / "launches.log", folder / "reloads.log"
        self.renames = folder / "renames.log"

    def create(self) -> "World":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.yaml.write_text(YAML)
        (self.folder / "reload.py").write_text(RELOAD)
        (self.folder / "incident.log").write_text(simulate(load_scenario(SCENARIO)).log_text)
        self.toml.write_text(fake_vllm_deployment(
            "speech", scenario=SCENARIO, keys=f'config_file = "{self.yaml}"\n',
            env={"FAKE_VLLM_LINE_DELAY": "0", "FAKE_VLLM_TOKEN_DELAY": "0", "FAKE_VLLM_LAUNCH_LOG": self.launches},
            tables=f'[deployments.speech.reload]\nmethod = "restart"\n'
                   f'argv = {json.dumps([sys.executable, str(self.folder / "reload.py"), str(self.reloads)])}\n'))
        return self

    def selfheal(self, *args: str, crash: str = "count", counts: Path | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        """`selfheal ARGS` as a real process, through the crash-point wrapper (`count`: no kill)."""
        env = dict(os.environ, PYTHONPATH=str(ROOT), CRASHPOINT_JOURNAL=str(self.renames))
        if counts is not None:
            env["CRASHPOINT_COUNTS"] = str(counts)
        return subprocess.run([sys.executable, "-m", "tests.reliability.crashpoint", crash, "--", "--db", str(self.db),
                               "--config", str(self.toml), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def observe(self) -> None:
        done = self.selfheal("observe", "--deployment", "speech", str(self.folder / "incident.log"))
        assert done.returncode == 0, done.stderr

    def effects(self) -> dict:
        lines = lambda p: p.read_text().splitlines() if p.exists() else []  # noqa: E731
        return {"canary_servers": len(lines(self.launches)), "reloads": len(lines(self.reloads)),
                "config_writes": lines(self.renames).count(self.yaml.name),
                "yaml": self.yaml.read_text(),
                "previous": (self.folder / "vllm.yaml.previous").read_text()
                if (self.folder / "vllm.yaml.previous").exists() else None}

    def outcome(self) -> dict:
        """What a run decided, free of ids, times, pids and ports: the comparable end state."""
        with open_store(self.db) as store:
            view = projections.view_as_of(store)
            events = list(store.read())
            assert store.recorder.verify().ok
        types = [r.type for r in events if r.type not in RECOVERY_EVENTS and r.type != "CanaryLaunched"]
        runs = [{"status": r.status, "canaries": r.canaries, "promoted": _plain(r.promoted),
                 # fitness is measured throughput, which varies from one canary to the next
                 "candidates": [(c.origin, _plain(c.config), c.outcome, c.fitness is not None) for c in r.candidates]}
                for r in view["runs"].by_id.values()]
        baselines = {d: [(v.version, _plain(v.config), v.verified) for v in history]
                     for d, history in view["baselines"].history.items()}
        return {"types": types, "runs": runs, "baselines": baselines,
                # the budget: runs counted once, no run left open (start times follow the capture clock)
                "rate_limit": {d: {"runs": len(b.run_starts), "failures": b.consecutive_failures,
                                   "open_runs": len(b.open_runs)} for d, b in view["rate_limit"].deployments.items()},
                "orphans_reaped": sum(1 for r in events if r.type == "CanaryOrphanReaped"),
                "canary_ids": sorted({r.event.canary_id for r in events if r.type == "CanaryStarted"}),
                "event_ids_unique": len({r.event_id for r in events}) == len(events),
                "positions": [r.position for r in events] == list(range(1, len(events) + 1))}


def _plain(value):
    return json.loads(msgspec.json.encode(value))
