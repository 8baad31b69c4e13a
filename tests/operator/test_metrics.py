"""Issue 18.1: `--metrics-port` serves selfheal's own metrics, computed from the log.

A real log (the demo's heal, then an incident observed from a vLLM log) is served by the
installed `selfheal` in a subprocess, scraped over loopback and parsed with prometheus_client's
own parser; each number is checked against what `selfheal events --json` says the log holds.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from selfheal.edges.sim import load_scenario, simulate

from tests.operator.conftest import SAMPLES, free_port, scrape, selfheal, until


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def events(db) -> list[dict]:
    out = selfheal("--db", str(db), "events", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def configured(tmp_path):
    """A configured deployment's selfheal.toml, and a vLLM log of its failure."""
    config = tmp_path / "selfheal.toml"
    config.write_text('[deployments.chat]\nscenario = "workstation-12gb-speech"\n')
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    return config, log


def test_run_follow_serves_the_logs_counts_as_it_handles_new_events(tmp_path, service):
    db = tmp_path / "s.db"
    config, log = configured(tmp_path)
    port = free_port()
    s = service("--db", str(db), "--config", str(config), "run", "--follow", "--interval", "0.2",
                "--metrics-port", str(port))
    until(lambda: "selfheal_events_total" in scrape(port), "the metrics endpoint")
    # an incident recorded by another process while it runs: the runner heals it, the metrics follow
    out = selfheal("--db", str(db), "--config", str(config), "observe", str(log))
    assert out.returncode == 0, out.stderr
    got = until(lambda: (m := samples(scrape(port))).get(("selfheal_runs_total", (("outcome", "promoted"),))) == 1
                and not any(v for (name, _), v in m.items() if name == "selfheal_handler_lag_events") and m,
                "the healed run in the metrics")
    recorded = events(db)
    got = until(lambda: (m := samples(scrape(port)))[("selfheal_events_total", ())] == len(recorded) and m,
                "every event in the metrics")
    types = Counter(e["type"] for e in recorded)
    assert got[("selfheal_log_position", ())] == recorded[-1]["position"]
    assert got[("selfheal_incidents_total", ())] == types["IncidentCaptured"] >= 1
    assert got[("selfheal_runs_started_total", ())] == types["RunStarted"] == 1
    results = Counter(("passed" if e["data"]["measurements"]["passed_load"] else "failed_startup"
                       if not e["data"]["measurements"]["started"] else "failed_load")
                      for e in recorded if e["type"] == "CanaryCompleted")
    assert results
    for result in ("passed", "failed_startup", "failed_load"):  # each result from the backend's first canary on
        assert got[("selfheal_canaries_total", (("backend", "sim"), ("result", result)))] == results[result]
    assert got[("selfheal_runs_total", (("outcome", "escalated"),))] == 0
    kinds = Counter(e["data"]["finding"]["kind"] for e in recorded if e["type"] == "ObservationMade")
    assert kinds
    for kind, n in kinds.items():
        assert got[("selfheal_incidents_classified_total", (("kind", kind),))] == n
    waiting = types["PromotionProposed"] - types["PromotionNotCommitted"] - types["BaselineCommitStarted"]
    assert got[("selfheal_promotions_waiting", ())] == waiting
    assert 0 <= got[("selfheal_last_event_age_seconds", ())] < 60
    code, err = s.stop()
    assert code == 130, err


def test_observe_serves_metrics_while_it_follows_a_file(tmp_path, service):
    db, followed = tmp_path / "s.db", tmp_path / "followed.log"
    config, log = configured(tmp_path)
    followed.write_text("")
    port = free_port()
    service("--db", str(db), "--config", str(config), "observe", "--follow", str(followed), "--metrics-port", str(port))
    until(lambda: "selfheal_events_total" in scrape(port), "the metrics endpoint")
    with followed.open("a") as f:
        f.write(log.read_text())
    got = until(lambda: (m := samples(scrape(port))).get(("selfheal_incidents_total", ())) == 1 and m,
                "the followed incident in the metrics")
    assert got[("selfheal_runs_started_total", ())] == 0  # observe records; it runs no handler
    # no runner beside it: every handler of the loop has the whole log waiting, so an alert on
    # lag fires for a runner that never started, not only for one that stopped
    lags = {dict(labels)["handler"]: v for (name, labels), v in got.items() if name == "selfheal_handler_lag_events"}
    assert lags and set(lags.values()) == {got[("selfheal_log_position", ())]} and "intents" in lags, lags
    # the outcomes and alert kinds are there at 0 before the first: increase() sees the first one
    for outcome in ("promoted", "escalated", "refused"):
        assert got[("selfheal_runs_total", (("outcome", outcome),))] == 0
    assert got[("selfheal_alerts_total", (("kind", "escalation"),))] == 0


def test_metrics_port_on_run_without_follow_is_a_usage_error(tmp_path):
    out = selfheal("--db", str(tmp_path / "s.db"), "run", "--metrics-port", "0")
    assert out.returncode == 2 and "give --follow" in out.stderr, out.stderr


def test_a_port_in_use_is_one_clear_error(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = selfheal("--db", str(tmp_path / "s.db"), "run", "--follow", "--metrics-port", str(port))
    assert out.returncode == 1, out.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_healthz_answers_ok_while_the_handlers_keep_up_and_503_while_a_canary_hangs(tmp_path, service):
    """/healthz is systemd's watchdog for a container or a pod: a canary whose server never
    answers its health check holds the loop with events waiting, and past
    $SELFHEAL_HEALTH_STALE_SECONDS the probe fails; the canary's timeout ends it, and it is ok again."""
    db, config = tmp_path / "s.db", tmp_path / "selfheal.toml"
    hang = [sys.executable, "-c", "import time; time.sleep(600)", "{model}", "{port}"]  # never healthy
    config.write_text(f'[tournament]\nmax_candidates = 1\n[deployments.qwen]\ncanary_backend = "vllm"\n'
                      f'model = "Qwen/Qwen2.5-0.5B-Instruct"\ninventory = "host"\nhealth_timeout_s = 6\n'
                      f'command = {json.dumps(hang)}\ncurrent = {{gpu_memory_utilization = 0.9, max_model_len = 8192, '
                      f'max_num_seqs = 16, max_num_batched_tokens = 2048}}\n')
    assert selfheal("--db", str(db), "init").returncode == 0
    port = free_port()
    s = service("--db", str(db), "--config", str(config), "run", "--follow", "--interval", "0.2",
                "--metrics-port", str(port), env={"SELFHEAL_HEALTH_STALE_SECONDS": "1.5"})
    # before its first read of the log the service answers 503 by design: wait for the first ok
    assert until(lambda: health(port) == (200, "ok"), "/healthz ok once the log is read")
    out = selfheal("--db", str(db), "--config", str(config), "observe", "--deployment", "qwen",
                   str(SAMPLES / "failing_sampler_oom_v1.log"))
    assert out.returncode == 0, out.stderr
    code, why = until(lambda: (h := health(port))[0] == 503 and h, "/healthz failing while the canary hangs")
    assert why.startswith("events have waited") and why.endswith("with no handler moving"), why
    assert until(lambda: health(port) == (200, "ok"), "/healthz ok once the canary timed out", deadline_s=60)
    assert b"selfheal_events_total" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    s.stop()


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()


def test_a_bad_health_staleness_is_one_clear_error(tmp_path):
    out = selfheal("--db", str(tmp_path / "s.db"), "run", "--follow", "--metrics-port", "0",
                   env={"SELFHEAL_HEALTH_STALE_SECONDS": "soon"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "$SELFHEAL_HEALTH_STALE_SECONDS: 'soon' is not a number of seconds above 0" in out.stderr
