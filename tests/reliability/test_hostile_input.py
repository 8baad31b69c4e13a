"""Hostile and broken input: each gives a clear one-line error or a safe skip, never a traceback,
never a partial write to the log, in bounded time and memory.

Real processes (`python -m selfheal`) where the CLI's promise is tested; the library
(`handlers.observer.diagnose`, the store) for the rest. Tests marked xfail(strict=True) are
bugs found here: each reason says where, and the test turns green once it is fixed.
"""
from __future__ import annotations

import math
import random
import sqlite3
import sys
import time
import tracemalloc
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfheal.eventstore import open_store
from selfheal.eventstore.store import Pending, new_id
from selfheal.handlers.intents import bound_seed
from selfheal.handlers.incidents import MAX_INCIDENT_BYTES
from selfheal.handlers.observer import diagnose, format_diagnosis
from selfheal.handlers.runtime import Runner
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.events import IntentArchived
from selfheal.schemas.serving import ServingConfig
from tests.conftest import T0
from tests.reliability.hostile import HOSTILE, REAL, STARTUP, assert_one_line_error, selfheal
from tests.reliability.procs import Stamp

TIME_BOUND_S = 10.0
MEMORY_BOUND_MIB = 512
#: the workstation scenario's production config: inside the default bounds
CURRENT = ServingConfig(gpu_memory_utilization=0.9, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=2048)
SIM_CONFIG = '[deployments.ws]\nscenario = "workstation-12gb-speech"\n'


def _texts(raw: bytes) -> list[str]:
    """The ways a log's bytes reach the observer: decoded with U+FFFD (files, stdin, journald,
    canaries) and, for library callers, with lone surrogates."""
    return [raw.decode("utf-8", "replace"), raw.decode("utf-8", "surrogateescape")]


def _check_diagnosis(d, current: ServingConfig, bounds: ActuatorBounds, max_changes: int = 2) -> None:
    """What the loop may do with a diagnosis: every number finite, and a tune finding's seed is
    either inside the bounds (changing at most max_changes parameters) or refused (None)."""
    for f in d.findings:
        assert all(math.isfinite(v) for v in f.numbers.values()), f.numbers
        assert all(isinstance(v, bool) or math.isfinite(v) for v in f.fix.values()), f.fix
        if f.action != "tune":
            continue
        config, problems = bound_seed(current, f.fix, f.fix_direction, bounds, max_changes)
        if config is None:
            assert problems
            continue
        changed = current.diff(config)
        assert 1 <= len(changed) <= max_changes
        numeric = bounds.numeric()
        for name, (_, value) in changed.items():
            if name == "enforce_eager":
                assert not value or bounds.enforce_eager_allowed
            else:
                assert numeric[name].contains(value), (f.kind, name, value, numeric[name])
        if not bounds.violations(current):
            assert bounds.violations(config) == [], (f.kind, f.fix, config)


# --- the observer on hostile text ---------------------------------------------------------------

@pytest.mark.parametrize("name", list(HOSTILE))
def test_diagnose_on_hostile_text_is_safe_and_bounded(name):
    current, bounds = CURRENT, ActuatorBounds()
    for text in _texts(HOSTILE[name]):
        tracemalloc.start()
        started = time.monotonic()
        try:
            d = diagnose(text, current=current, bounds=bounds)
            format_diagnosis(d)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert time.monotonic() - started < TIME_BOUND_S
        assert peak < 256 << 20, f"{peak / 2**20:.0f} MiB"
        evidence = sum(len(line) for f in d.findings for line in f.evidence)
        assert evidence <= 2 * len(text) + 1000
        msgspec.json.encode(d)  # storable as an event, lone surrogates included
        _check_diagnosis(d, current, bounds)
    if name in ("invalid-utf8", "ansi-escapes", "10MB-line"):  # the real failure is still read
        assert d.primary is not None and d.primary.kind == "startup_free_memory_below_utilization"
        assert d.primary.numbers["free_gib"] == 9.8


def test_one_long_line_of_repeated_errors_keeps_evidence_bounded():
    # a 10 MB line holding one vLLM error 50,000 times once gave 50,000 findings, each carrying
    # the whole line as evidence (500 GB): findings are now capped per rule and record, and a
    # long evidence line is cut down to the match with some context (engine.py)
    line = (STARTUP + " ") * (10_000_000 // (len(STARTUP) + 1))
    started = time.monotonic()
    d = diagnose(line + "\n", current=CURRENT)
    assert time.monotonic() - started < TIME_BOUND_S
    assert d.primary is not None and d.primary.numbers["free_gib"] == 9.8
    evidence = sum(len(x) for f in d.findings for x in f.evidence)  # summed, never materialised
    assert evidence < 50 << 20, f"{len(d.findings)} findings carry {evidence / 2**30:.0f} GiB of evidence"
    assert len(d.findings) <= 16 and all(len(x) < 4096 for f in d.findings for x in f.evidence)
    assert all(STARTUP.split(": ", 1)[1] in x for x in d.primary.evidence)  # the matched text is kept whole
    msgspec.json.encode(d)


# random text, and real vLLM lines spliced with random numbers --------------------------------

NUMBER_TEXT = st.one_of(
    st.sampled_from(["1e308", "-1e308", "1e-308", "-5", "-5 GiB", "NaN", "nan", "inf", "-inf", "Infinity", "0",
                     "-0", "0.0", "4,096", "1" * 40, "9" * 31, "0.000001", "1.", ".5", "0x10", "1_000", "٣"]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)


@st.composite
def spliced_message(draw) -> str:
    import re

    message = draw(st.sampled_from(REAL))
    return re.sub(r"\d+(?:\.\d+)?", lambda _: draw(NUMBER_TEXT), message)


FRAGMENT = st.one_of(
    spliced_message(), st.sampled_from(REAL), st.text(max_size=40),
    st.sampled_from(["\n", "\r\n", "\r", "\x1b[31m", "\x1b[0m", "\x00", "\ufffd", "\udcff", " GiB", " MiB", "(", ")",
                     "(EngineCore_DP0 pid=1) ERROR 11-24 06:55:12 [core.py:1] ", "Traceback (most recent call last):",
                     '  File "x.py", line 1, in capture_model']),
)


@st.composite
def bounds_and_current(draw) -> tuple[ActuatorBounds, ServingConfig]:
    """Any bounds an operator may configure (min <= max, step > 0; max need not be on the grid),
    and a current config inside them."""
    def actuator(name, lo, hi, steps, integer):
        a = draw(st.integers(lo, hi)) if integer else draw(st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5, 0.6]))
        b = draw(st.integers(a, hi * 4)) if integer else draw(st.sampled_from([x for x in (0.5, 0.6, 0.8, 0.9, 0.92,
                                                                                           0.95, 1.0) if x >= a]))
        step = draw(st.sampled_from(steps))
        return Actuator(name=name, min=a, max=b, step=step)

    util = actuator("gpu_memory_utilization", 0, 0, [0.01, 0.05, 0.1], False)
    seqs = actuator("max_num_seqs", 1, 64, [1, 2, 4, 8], True)
    mml = actuator("max_model_len", 256, 8192, [256, 512, 1000], True)
    mnbt = actuator("max_num_batched_tokens", 256, 8192, [256, 512], True)
    bounds = ActuatorBounds(gpu_memory_utilization=util, max_num_seqs=seqs, max_model_len=mml,
                            max_num_batched_tokens=mnbt, enforce_eager_allowed=draw(st.booleans()))
    current = ServingConfig(
        gpu_memory_utilization=round(draw(st.floats(util.min, util.max)), 4),
        max_num_seqs=draw(st.integers(int(seqs.min), int(seqs.max))),
        max_model_len=draw(st.integers(int(mml.min), int(mml.max))),
        max_num_batched_tokens=draw(st.integers(int(mnbt.min), int(mnbt.max))),
        enforce_eager=draw(st.booleans()) if bounds.enforce_eager_allowed else False)
    return bounds, current


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.lists(FRAGMENT, max_size=10), bounds_and_current(), st.booleans(), st.floats(0, 0.5),
       st.integers(1, 3))
def test_diagnose_never_raises_and_the_loop_never_runs_a_value_outside_the_bounds(parts, bc, known, buffer,
                                                                                  max_changes):
    bounds, current = bc
    text = "".join(parts)
    # the observer handler passes the deployment's current config and bounds; a bare
    # `selfheal diagnose` may know neither
    d = diagnose(text, current=current if known else None, bounds=bounds, safety_buffer=buffer)
    format_diagnosis(d)
    msgspec.json.encode(d)
    _check_diagnosis(d, current, bounds, max_changes)


@PROPERTY
@given(st.binary(max_size=2000))
def test_diagnose_never_raises_on_random_bytes(raw):
    for text in _texts(raw):
        d = diagnose(text)
        msgspec.json.encode(d)
        _check_diagnosis(d, CURRENT, ActuatorBounds())


def test_candidates_stay_inside_bounds_whose_max_is_off_the_grid():
    from selfheal.handlers.models.search import neighbourhood

    bounds = ActuatorBounds(
        gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.6, max=0.92, step=0.05),
        max_num_seqs=Actuator(name="max_num_seqs", min=2, max=16, step=4),
        max_model_len=Actuator(name="max_model_len", min=1024, max=8000, step=512))
    current = ServingConfig(gpu_memory_utilization=0.6, max_model_len=4096, max_num_seqs=4,
                            max_num_batched_tokens=2048)
    outside = [c for c in neighbourhood(current, ["max_model_len", "max_num_seqs"], bounds, 2)
               if bounds.violations(c)]
    assert outside == [], f"{len(outside)} candidates outside the bounds, e.g. {bounds.violations(outside[0])}"
    seed, _ = bound_seed(current, {"gpu_memory_utilization": 0.91}, {"gpu_memory_utilization": "increase"}, bounds, 2)
    assert seed is None or bounds.violations(seed) == []


# --- the CLI on hostile files -------------------------------------------------------------------

@pytest.fixture
def deployment(tmp_path) -> tuple[Path, Path]:
    toml = tmp_path / "selfheal.toml"
    toml.write_text(SIM_CONFIG)
    return toml, tmp_path / "log.db"


def _events(db: Path) -> list:
    with open_store(db) as store:
        return list(store.read())


CLI_CASES = ["invalid-utf8", "nul-bytes", "10MB-line", "1e308", "-5 GiB", "NaN"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_diagnose_and_observe_hostile_files(name, tmp_path, deployment):
    toml, db = deployment
    log = tmp_path / "hostile.log"
    log.write_bytes(HOSTILE[name])
    diag = selfheal(tmp_path, "diagnose", str(log))
    found = diag.out.startswith("Failure: ")  # exit 4 says a failure was found (cli/exits.py), 0 none
    assert diag.rc == (4 if found else 0) and diag.err == "", diag.err[-2000:]
    assert diag.out.splitlines()[0].startswith(("Failure: ", "No configuration failure found."))
    assert diag.seconds < TIME_BOUND_S and diag.max_rss_mib < MEMORY_BOUND_MIB, (diag.seconds, diag.max_rss_mib)
    # standard input takes the same path
    piped = selfheal(tmp_path, "diagnose", "-", stdin=HOSTILE[name])
    assert (piped.rc, piped.out) == (diag.rc, diag.out)

    seen = selfheal(tmp_path, "--db", str(db), "--config", str(toml), "observe", str(log))
    assert seen.rc == 0 and seen.err == "", seen.err[-2000:]
    assert seen.seconds < TIME_BOUND_S and seen.max_rss_mib < MEMORY_BOUND_MIB
    rows = _events(db)
    assert [r.type for r in rows] == ["BaselineImported", "IncidentCaptured"]  # one incident, nothing else
    raw = rows[1].event.raw_text
    assert "\x00" not in raw and len(raw.encode()) <= MAX_INCIDENT_BYTES + 100
    with open_store(db) as store:
        assert store.recorder.verify().ok


def test_the_loop_handles_every_hostile_incident_once(tmp_path, deployment):
    """Every hostile input recorded as an incident of one deployment, then a real `selfheal
    run`: each incident is observed exactly once (an observation or a recorded non-match);
    none wedges the loop; time and memory stay bounded."""
    toml, db = deployment
    for name, raw in HOSTILE.items():
        path = tmp_path / f"{name.replace(' ', '_')}.log"
        path.write_bytes(raw)
        assert selfheal(tmp_path, "--db", str(db), "--config", str(toml), "observe", str(path)).rc == 0
    run = selfheal(tmp_path, "--db", str(db), "--config", str(toml), "run", timeout=120)
    assert run.rc == 0, run.err[-2000:]
    assert run.seconds < 60 and run.max_rss_mib < MEMORY_BOUND_MIB, (run.seconds, run.max_rss_mib)
    rows = _events(db)
    incidents = [r for r in rows if r.type == "IncidentCaptured" and r.event.source.kind == "file"]
    assert len(incidents) == len(HOSTILE)
    for incident in incidents:
        answers = [r for r in rows if r.causation_id == incident.event_id
                   and r.type in ("ObservationMade", "IncidentUnmatched")]
        assert len(answers) == 1, (incident.event.source.path, [r.type for r in answers])
    with open_store(db) as store:
        assert store.recorder.verify().ok
        assert set(store.recorder.checkpoints().values()) == {store.last_position()}


def test_the_loop_survives_one_long_line_of_repeated_errors(tmp_path, deployment):
    toml, db = deployment
    log = tmp_path / "repeated.log"
    log.write_text((STARTUP + " ") * (10_000_000 // (len(STARTUP) + 1)) + "\n")
    assert selfheal(tmp_path, "--db", str(db), "--config", str(toml), "observe", str(log)).rc == 0
    run = selfheal(tmp_path, "--db", str(db), "--config", str(toml), "run", timeout=120, memory_limit=1 << 30)
    assert run.rc == 0, run.err[-500:]
    assert any(r.type == "ObservationMade" for r in _events(db))


def test_observe_of_several_files_writes_all_or_nothing(tmp_path, deployment):
    toml, db = deployment
    good = tmp_path / "good.log"
    good.write_text(STARTUP + "\n")
    result = selfheal(tmp_path, "--db", str(db), "--config", str(toml), "observe", str(good),
                      str(tmp_path / "missing.log"))
    assert_one_line_error(result)
    assert "missing.log" in result.err
    assert not db.exists() or [r.type for r in _events(db) if r.type == "IncidentCaptured"] == []


# --- broken database files ----------------------------------------------------------------------

def _make_log(path: Path, events: int = 2000) -> None:
    with open_store(path, create=True) as store:
        for i in range(events // 40):
            store.append(f"s{i % 5}", [Pending(event=IntentArchived(intent_id=str(j), deployment="chat",
                                                                    outcome="promoted"),
                                               event_id=new_id(), occurred_at=T0) for j in range(40)])


@pytest.fixture(scope="module")
def good_log(tmp_path_factory) -> tuple[bytes, int]:
    """A healthy log of 2,000 events, and the page of the events table that holds its last row
    (found by that row's hash, which only the table stores)."""
    path = tmp_path_factory.mktemp("good") / "log.db"
    _make_log(path)
    with open_store(path) as store:
        last_hash = store.recorder.connection.execute(
            "SELECT hash FROM events ORDER BY position DESC LIMIT 1").fetchone()[0]
    data = path.read_bytes()
    at = data.find(last_hash.encode())
    assert at > 0 and data.find(last_hash.encode(), at + 1) < 0
    return data, at // 4096


def _damaged(log: tuple[bytes, int], kind: str) -> bytes:
    good, last_page = log
    page = 4096
    if kind == "zero-length":
        return b""
    if kind == "garbage":
        return random.Random(1).randbytes(8192)
    if kind == "text file":
        return b"this is not a database\n" * 100
    if kind.startswith("cut at page "):
        return good[:int(kind.split()[-1]) * page]
    if kind == "cut at 100 bytes":
        return good[:100]
    if kind == "torn page":  # the upper half of the newest events page never reached the disk
        start = last_page * page + page // 2
        return good[:start] + bytes(page // 2) + good[start + page // 2:]
    if kind == "damaged page":
        data = bytearray(good)
        data[100 * page:103 * page] = random.Random(2).randbytes(3 * page)
        return bytes(data)
    raise AssertionError(kind)


CLEAR = ["zero-length", "garbage", "text file", "cut at 100 bytes", "cut at page 1", "cut at page 2",
         "cut at page 100"]


def _run_on_bad_file(tmp_path: Path, good: tuple[bytes, int], kind: str, command: str):
    path = tmp_path / "bad.db"
    data = _damaged(good, kind)
    path.write_bytes(data)
    result = selfheal(tmp_path, "--db", str(path), command)
    assert path.read_bytes() == data, "the file was changed"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("bad.db")) == ["bad.db"]
    return result


@pytest.mark.parametrize("command", ["events", "verify"])
@pytest.mark.parametrize("kind", CLEAR)
def test_bad_database_files_give_one_line_and_stay_untouched(tmp_path, good_log, kind, command):
    result = _run_on_bad_file(tmp_path, good_log, kind, command)
    assert_one_line_error(result)
    assert "unexpected" not in result.err and "bad.db" in result.err
    assert result.out == ""


def test_a_torn_page_fails_verify_at_the_first_lost_position(tmp_path, good_log):
    result = _run_on_bad_file(tmp_path, good_log, "torn page", "verify")
    assert_one_line_error(result)
    assert "verify failed at position" in result.err


@pytest.mark.parametrize("kind, command", [("torn page", "events"), ("damaged page", "events"),
                                           ("damaged page", "verify")])
def test_a_damaged_log_gives_a_clear_error(tmp_path, good_log, kind, command):
    result = _run_on_bad_file(tmp_path, good_log, kind, command)
    assert_one_line_error(result)
    assert "unexpected" not in result.err and ("bad.db" in result.err or "position" in result.err), result.err


# --- a full disk --------------------------------------------------------------------------------

def _archived(i: int, prefix: str = "in") -> Pending:
    return Pending(event=IntentArchived(intent_id=str(i), deployment="chat", outcome="promoted"),
                   event_id=f"{prefix}-{i}", occurred_at=T0)


def _fill_disk(store) -> None:
    """No page may be added to the file from now on (SQLite's max_page_count on this connection)."""
    conn = store.recorder.connection
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages


def test_a_full_disk_leaves_the_log_intact_and_usable(tmp_path):
    path = tmp_path / "log.db"
    store = open_store(path, create=True)
    store.append("in", [_archived(i) for i in range(300)])
    _fill_disk(store)
    before = store.last_position()
    for n in (40, 400):
        with pytest.raises(Exception):
            store.append("in", [_archived(n * 1000 + i, "lost") for i in range(n)])
    # a handler runner under the full disk: it fails part-way (300 outputs cannot fit)
    with pytest.raises(Exception):
        Runner(store, [Stamp()]).run_until_idle()
    assert before <= store.last_position() < before + 300
    with open_store(path) as other:  # as another process sees it
        assert other.recorder.verify().ok
        assert not any(r.event_id.startswith("lost-") for r in other.read())  # nothing of the failed batches
    store.recorder.connection.execute("PRAGMA max_page_count = 1073741823")
    store.append("in", [_archived(300 + i) for i in range(100)])
    Runner(store, [Stamp()]).run_until_idle()
    outputs: dict[str, int] = {}
    for r in store.read_stream("out"):
        outputs[r.causation_id] = outputs.get(r.causation_id, 0) + 1
    inputs = [r.event_id for r in store.read_stream("in")]
    assert len(inputs) == 400 and outputs == {i: 1 for i in inputs}  # each handled once, none skipped
    assert store.recorder.verify().ok
    assert store.recorder.checkpoint("stamp") == store.last_position()
    store.close()


def test_a_full_disk_is_reported_as_such(tmp_path):
    store = open_store(tmp_path / "log.db", create=True)
    store.append("in", [_archived(i) for i in range(10)])
    _fill_disk(store)
    with pytest.raises(Exception) as failed:
        store.append("in", [_archived(i, "lost") for i in range(400)])
    assert "full" in str(failed.value).lower(), repr(failed.value)


# --- a tampered row -----------------------------------------------------------------------------

@pytest.mark.parametrize("tamper, position", [
    ("DROP TRIGGER events_refuse_update; UPDATE events SET data = '{\"type\":\"IntentArchived\"}' "
     "WHERE position = 3", 3),
    ("DROP TRIGGER events_refuse_update; UPDATE events SET stream = 'elsewhere' WHERE position = 5;"
     "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'x'); END", 5),
    ("DROP TRIGGER events_refuse_update; UPDATE events SET occurred_at = '2020-01-01T00:00:00.000000Z' "
     "WHERE position = 7", 7),
    ("DROP TRIGGER events_refuse_delete; DELETE FROM events WHERE position = 4", 4),
])
def test_selfheal_verify_finds_a_tampered_row(tmp_path, tamper, position):
    path = tmp_path / "log.db"
    assert selfheal(tmp_path, "--db", str(path), "init").rc == 0
    with open_store(path) as store:
        store.append("in", [_archived(i) for i in range(10)])
    ok = selfheal(tmp_path, "--db", str(path), "verify")
    assert ok.rc == 0 and ok.out.startswith("ok: 10 events")
    conn = sqlite3.connect(path)
    conn.executescript(tamper)
    conn.close()
    result = selfheal(tmp_path, "--db", str(path), "verify")
    assert_one_line_error(result)
    assert f"verify failed at position {position}:" in result.err


# --- a vLLM config YAML that does not parse -----------------------------------------------------

@pytest.mark.parametrize("content, expect", [
    (b"model: m\nmax-model-len: [1, 2\n", "not valid YAML at line 3"),
    (b"model: m\n  max-num-seqs: 4\n bad: indent\n", "not valid YAML"),
    (b"gpu-memory-utilization: 0.9\n\tmax-num-seqs: 4\n", "not valid YAML"),
    (b"- a\n- b\n", "must be a mapping"),
    (b'"unterminated\n', "not valid YAML"),
    (b"max-model-len: abc\n", ""),      # parses, but the values are wrong
    (b"max-num-seqs: .inf\n", ""),
    (b"\xff\xfe: 1\n", ""),
])
def test_diagnose_with_a_config_that_does_not_parse_or_holds_wrong_values(tmp_path, content, expect):
    log = tmp_path / "vllm.log"
    log.write_text(STARTUP + "\n")
    config = tmp_path / "vllm.yaml"
    config.write_bytes(content)
    result = selfheal(tmp_path, "diagnose", str(log), "--vllm-config", str(config))
    assert_one_line_error(result)
    assert str(config) in result.err and expect in result.err, result.err
    assert "error: unexpected" not in result.err, result.err  # what an unhandled exception prints
    assert result.out == ""


# --- shell metacharacters in a model name or path -----------------------------------------------

STAND_IN = Path(__file__).resolve().parent / "stand_in.py"


def _hostile_names(victim: Path) -> list[str]:
    # the classic `"; rm -rf / #` shape, aimed at a victim file of the test's own instead of `/`:
    # were the argument ever given to a shell, the victim would vanish (and nothing else would)
    return [f'"; rm -f {victim} #', f"'; rm -f {victim} #", "$(touch PWNED)", "`touch PWNED`",
            "/models/$(touch PWNED)/llama; touch PWNED", "a && touch PWNED || touch PWNED", "| touch PWNED",
            "model\nwith newline; touch PWNED", "-rf --help $HOME ~ * ?", "ünïcødé 模型 \\ \" ' {}"]


def test_model_names_with_shell_metacharacters_reach_the_canary_verbatim(tmp_path):
    import json
    from datetime import datetime, timezone

    from selfheal.edges.vllm_backend import LoadSettings, VllmCanaryBackend

    victim = tmp_path / "victim"
    victim.write_text("still here")
    record = tmp_path / "argv.jsonl"
    work = tmp_path / "work"
    work.mkdir()
    names = _hostile_names(victim)
    for model in names:
        backend = VllmCanaryBackend(
            [sys.executable, str(STAND_IN), "serve", "{model}", "--host", "{host}", "--port", "{port}"], model,
            health_timeout_s=20, load=LoadSettings(requests=1, max_concurrency=1, max_tokens=1), grace_s=2,
            env={"STANDIN_RECORD": str(record)}, workdir=work)
        outcome = backend.run(ServingConfig(), datetime.now(timezone.utc))
        assert not outcome.measurements.started
    seen = [json.loads(line)["argv"] for line in record.read_text().splitlines()]
    assert [argv[2] for argv in seen] == names, "a model name did not reach the child verbatim"
    assert all(argv[1] == "serve" and argv[3:5] == ["--host", "127.0.0.1"] for argv in seen)
    assert victim.read_text() == "still here"
    for folder in (tmp_path, work, Path.cwd(), Path.home()):
        assert not (folder / "PWNED").exists()


def test_a_model_name_with_template_braces_reaches_the_canary_verbatim():
    from selfheal.edges.vllm_backend import VllmCanaryBackend

    model = "/models/{host}/{port}/llama"
    backend = VllmCanaryBackend(["vllm", "serve", "{model}", "--port", "{port}"], model)
    assert backend.argv(ServingConfig(), 8000)[2] == model


def test_supervise_passes_model_and_config_path_verbatim(tmp_path):
    from selfheal.edges.supervise import serve_argv
    from selfheal.schemas.config import parse_settings

    victim = tmp_path / "victim"
    for value in _hostile_names(victim):
        text = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        settings = parse_settings(f'[deployments.x]\ncanary_backend = "vllm"\nmodel = "{text}"\n'
                                  f'config_file = "{text}.yaml"\n').deployments["x"]
        argv = serve_argv(settings)
        assert argv[2] == value and argv[4] == value + ".yaml"
