"""The Python API (`selfheal.<command>`): README's example runs as written, results are typed,
the log and the config are found like the CLI finds them, and a plain str is never read as
log text."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest

import selfheal
from selfheal.edges import deployments
from selfheal.eventstore.recorder import StoredEvent
from selfheal.eventstore.store import EventStore, Recorded
from selfheal.handlers.observer import Diagnosis
from selfheal.handlers.observer.loader import builtin_rule_text
from selfheal.handlers.runtime import RunReport
from selfheal.projections.runs import RunSummary
from selfheal.schemas.config import Settings

ROOT = Path(__file__).resolve().parents[1]
EXCERPT = ("(EngineCore_DP0 pid=4242) ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device cuda:0 "
           "(8.41/11.66 GiB) on startup is less than desired GPU memory utilization (0.9, 10.49 GiB). Decrease "
           "GPU memory utilization or reduce GPU memory used by other processes.\n")
CHAT = '[deployments.chat]\nscenario = "workstation-12gb-speech"\n'


def readme_example() -> str:
    section = re.search(r"^## Python API\n(.*?)^## ", (ROOT / "README.md").read_text(), re.S | re.M)
    assert section, "README.md has no '## Python API' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert len(blocks) == 1, "the Python API section has one runnable example"
    return blocks[0]


def test_the_readme_example_runs_as_written(tmp_path):
    (tmp_path / "example.py").write_text(readme_example())
    env = {k: v for k, v in os.environ.items() if k not in ("SELFHEAL_DB", "SELFHEAL_CONFIG", "SELFHEAL_MODE")}
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert " promoted 2 4" in proc.stdout and "['promoted']" in proc.stdout
    assert {p.name for p in tmp_path.iterdir()} >= {"demo.db", "ops.db", "vllm.log", "selfheal.toml"}


def test_import_selfheal_gives_the_api():
    proc = subprocess.run([sys.executable, "-c", "import selfheal; print(selfheal.diagnose, selfheal.rules_list)"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "<function diagnose" in proc.stdout and "<function rules_list" in proc.stdout


@pytest.fixture
def rules_file(tmp_path):
    """A rules file holding the built-in rules."""
    path = tmp_path / "rules.toml"
    path.write_text(builtin_rule_text())
    return path


@pytest.mark.parametrize("name", ["diagnose", "rules_test"])
def test_a_plain_str_is_never_read_as_log_text(tmp_path, monkeypatch, rules_file, name):
    function = selfheal.diagnose if name == "diagnose" else \
        (lambda log, **kw: selfheal.rules_test(rules_file, log, **kw))
    monkeypatch.chdir(tmp_path)
    Path("vllm.log").write_text(EXCERPT)
    for given in ("vllm.log", "missing.log", EXCERPT):  # a file's name, no file's name, log text: all refused
        with pytest.raises(TypeError, match=r"pass a log file as pathlib\.Path\(.*\) or the log's text as text="):
            function(given)
    with pytest.raises(TypeError, match="only one"):
        function(Path("vllm.log"), text=EXCERPT)
    with pytest.raises(TypeError, match="only one"):
        function(None)
    with pytest.raises(TypeError, match="text= takes a str"):
        function(None, text=EXCERPT.encode())
    # the three ways in that are allowed give one answer
    answers = {msgspec.json.encode(function(x)) for x in (Path("vllm.log"), EXCERPT.encode())}
    answers.add(msgspec.json.encode(function(None, text=EXCERPT)))
    assert len(answers) == 1


def test_diagnose_returns_a_typed_finding(tmp_path, rules_file):
    diagnosis = selfheal.diagnose(text=EXCERPT, current={"gpu_memory_utilization": 0.9})
    assert isinstance(diagnosis, Diagnosis)
    assert diagnosis.primary.kind == "startup_free_memory_below_utilization"
    assert diagnosis.primary.fix == {"gpu_memory_utilization": 0.6}
    yaml_file = tmp_path / "vllm.yaml"
    yaml_file.write_text("gpu-memory-utilization: 0.9\n")
    assert selfheal.diagnose(text=EXCERPT, config_file=yaml_file) == diagnosis
    with pytest.raises(ValueError, match="'max_len' is not one of"):
        selfheal.diagnose(text=EXCERPT, current={"max_len": 5})
    with pytest.raises(FileNotFoundError):
        selfheal.diagnose(tmp_path / "missing.log")
    assert selfheal.rules_test(rules_file, text=EXCERPT).primary.kind == diagnosis.primary.kind


def test_commands_return_typed_results(tmp_path):
    db = tmp_path / "demo.db"
    result = selfheal.demo("workstation-12gb-speech", db=db)
    assert isinstance(result, selfheal.DemoResult) and result.outcome == "promoted"
    (run,) = selfheal.history(db=db)
    assert isinstance(run, RunSummary) and run.run_id == result.run_id
    rows = list(selfheal.events(db=db, types=["PromotionProposed"]))
    assert len(rows) == 1 and isinstance(rows[0], StoredEvent)
    assert isinstance(selfheal.typed(rows[0]), Recorded)
    assert selfheal.show(result.run_id[:8], db=db).chain[0].type == "IncidentCaptured"
    listing = selfheal.rules_list(db=db)
    assert isinstance(listing, selfheal.RulesListing) and listing.active.ruleset_id == "builtin"
    assert selfheal.verify(db=db).ok
    assert selfheal.rebuild(db=db)["position"] == result.events

    config = tmp_path / "selfheal.toml"
    config.write_text(CHAT)
    log = tmp_path / "vllm.log"
    log.write_text(EXCERPT)
    healed = selfheal.heal([log], db=tmp_path / "ops.db", config=config)
    assert isinstance(healed[0], selfheal.Healed) and all(isinstance(r, Recorded) for r in healed[0].events)
    assert healed[0].events[0].type == "IncidentCaptured"
    report = selfheal.run(db=tmp_path / "ops.db", config=config)
    assert isinstance(report, RunReport) and report.handled == 0  # heal already ran the loop to its end


def test_db_and_config_default_like_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SELFHEAL_DB", str(tmp_path / "env.db"))
    monkeypatch.delenv("SELFHEAL_CONFIG", raising=False)
    with pytest.raises(selfheal.StoreError, match="does not exist"):
        selfheal.history()  # a reader refuses a missing log
    with pytest.raises(selfheal.ConfigError, match="no deployments are configured"):
        selfheal.observe([Path("x.log")])  # the built-in defaults: no deployments
    Path("selfheal.toml").write_text(CHAT)  # ./selfheal.toml when $SELFHEAL_CONFIG is not set
    Path("vllm.log").write_text(EXCERPT)
    observed = selfheal.observe(["vllm.log"])  # files are paths: a str is a path here
    assert observed.deployment == "chat" and len(observed.incidents) == 1
    assert len(selfheal.observe("vllm.log").incidents) == 1  # one path, not its characters
    assert (tmp_path / "env.db").exists()
    other = tmp_path / "other.toml"
    other.write_text('[deployments.qa]\nscenario = "workstation-12gb-speech"\n')
    monkeypatch.setenv("SELFHEAL_CONFIG", str(other))
    assert selfheal.load_config().deployments.keys() == {"qa"}
    assert selfheal.load_config(tmp_path / "selfheal.toml").deployments.keys() == {"chat"}


def test_an_open_store_is_used_and_left_open(tmp_path):
    store = selfheal.open_db(tmp_path / "log.db", create=True)
    assert isinstance(store, EventStore)
    with store:
        assert selfheal.history(db=store) == []
        assert list(selfheal.events(db=store)) == []
        assert store.last_position() == 0  # still open


def test_run_follow_keeps_one_wiring_and_stops_when_asked(tmp_path, monkeypatch):
    """A follow loop wires the deployments once (a vLLM deployment's wiring probes the GPU)
    and keeps its runner; `stop` ends it after the poll that sees it set."""
    built, reports, stop = [], [], threading.Event()
    real_build = deployments.build
    monkeypatch.setattr(deployments, "build", lambda settings: built.append(1) or real_build(settings))

    def on_report(report):
        reports.append(report)
        if len(reports) == 3:
            stop.set()

    last = selfheal.run(follow=True, interval=0.01, on_report=on_report, stop=stop, db=tmp_path / "f.db",
                        config=Settings())
    assert len(reports) == 3 and last is reports[-1] and len(built) == 1
    assert last.head == selfheal.open_db(tmp_path / "f.db").last_position()


def test_every_exported_name_resolves_and_a_submodule_import_stays_light(tmp_path):
    assert set(selfheal.__all__) >= set(selfheal.COMMANDS)
    for name in selfheal.__all__:
        assert getattr(selfheal, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        selfheal.nosuch  # noqa: B018
    # a canary server or a benchmark importing the vocabulary does not load the whole library
    probe = ("import sys, selfheal.schemas.events, selfheal.edges.sim; "
             "print(sorted(m for m in ('selfheal.api', 'selfheal.review', 'click', 'sqlite_utils') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
