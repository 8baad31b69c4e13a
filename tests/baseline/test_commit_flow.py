"""Stage 7 with real processes: `selfheal supervise` runs production (the faithful fake vLLM
reading the committed YAML), commits reload it by SIGHUP, verification is real HTTP, a failed
verification rolls back, and the alerts reach a webhook that fails at first."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from selfheal.edges import deployments
from selfheal.edges.processes import free_loopback_port, processes_marked_with
from selfheal.edges.reload import wait_healthy
from selfheal.eventstore import Pending, new_id, open_store
from selfheal.handlers import loop
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import PromotionProposed
from selfheal.schemas.serving import ServingConfig

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_vllm.py"
OLD = ServingConfig(gpu_memory_utilization=0.78, max_model_len=32768, max_num_seqs=8, max_num_batched_tokens=2048)
YAML = """# production config of the mistral server; selfheal owns only the tunable keys
model: fake-model
tensor-parallel-size: 1
gpu-memory-utilization: 0.78
max-model-len: 32768   # what our users need
max-num-seqs: 8
max-num-batched-tokens: 2048
"""


class Webhook(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = Webhook.answers.pop(0) if Webhook.answers else 200
        Webhook.received.append({"status": status, "alert": json.loads(body)})
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Webhook.answers, Webhook.received = [500], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture
def production(tmp_path, webhook):
    port = free_loopback_port()
    config_file = tmp_path / "mistral.yaml"
    config_file.write_text(YAML)
    os.chmod(config_file, 0o640)
    pidfile = tmp_path / "supervise.pid"
    toml = tmp_path / "selfheal.toml"
    toml.write_text(f'''
mode = "dev"
[deployments.mistral]
canary_backend = "vllm"
model = "fake-model"
inventory = "host"
config_file = "{config_file}"
health_url = "http://127.0.0.1:{port}/health"
serve_command = ["{sys.executable}", "{FAKE}", "serve", "{{model}}", "--config", "{{config_file}}",
                 "--host", "127.0.0.1", "--port", "{port}"]
current = {{gpu_memory_utilization = 0.78, max_model_len = 32768, max_num_seqs = 8, max_num_batched_tokens = 2048}}
alerts = [{{type = "webhook", url = "{webhook}", retries = 3}}]
[deployments.mistral.reload]
method = "signal"
pidfile = "{pidfile}"
[deployments.mistral.verify]
deadline_s = 6
probe_requests = 2
[deployments.mistral.actuators.gpu_memory_utilization]
min = 0.5
max = 0.95
step = 0.01
[deployments.mistral.actuators.max_model_len]
min = 1024
max = 32768
step = 1024
[deployments.mistral.actuators.max_num_seqs]
min = 1
max = 64
step = 1
''')
    env = dict(os.environ, PYTHONPATH=str(ROOT), FAKE_VLLM_SCENARIO="c-mistral7b-shared-24gb",
               FAKE_VLLM_LINE_DELAY="0")
    supervisor = subprocess.Popen([sys.executable, "-m", "selfheal", "--config", str(toml), "supervise",
                                   "--pidfile", str(pidfile)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    settings = parse_settings(toml.read_text())
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}/health", 30, poll_s=0.2)[0]
        yield settings, config_file, supervisor
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out, _ = supervisor.communicate(timeout=30)
        print(out)
    assert processes_marked_with("supervised-") == [], "supervise left a server behind"



def promote(store, config: ServingConfig, previous: ServingConfig, deployment: str = "mistral") -> str:
    """A promotion as a real canary run would record it (the canary itself is tested elsewhere)."""
    promotion_id = new_id()
    event = PromotionProposed(promotion_id=promotion_id, run_id=new_id(), deployment=deployment, candidate_id=new_id(),
                              config=config, previous=previous, fitness=100.0, evidence_hash="sha256:x",
                              simulated=False, requires_approval=False)
    store.append(f"promotion-{promotion_id}", [Pending(event=event, event_id=new_id(), occurred_at=_now())])
    return promotion_id


def _now():
    from datetime import datetime, timezone
    return datetime.now(timezone.utc)


def test_commit_reload_verify_then_a_failed_commit_rolls_back(production, tmp_path):
    settings, config_file, supervisor = production
    edges = deployments.build(settings)
    store = open_store(tmp_path / "log.db", create=True)
    loop.import_baseline(store, edges["mistral"])

    good = OLD.changed(gpu_memory_utilization=0.79)
    promote(store, good, OLD)
    loop.run(store, settings, edges)
    text = config_file.read_text()
    assert "gpu-memory-utilization: 0.79" in text and "# what our users need" in text
    assert yaml.safe_load(text)["tensor-parallel-size"] == 1
    assert os.stat(config_file).st_mode & 0o777 == 0o640
    (verified,) = [r.event for r in store.read(types=["VerificationFinished"])]
    assert verified.healthy and verified.purpose == "commit", verified.detail
    versions = [(v.version, v.config.gpu_memory_utilization, v.verified)
                for v in loop.projections.view_as_of(store)["baselines"].history["mistral"]]
    assert versions == [(1, 0.78, None), (2, 0.79, True)]

    # a co-tenant holds 4 GiB on this card: util 0.85 asks for more than is free, so the
    # restarted server never comes up; selfheal restores v2 and production is healthy again
    promote(store, good.changed(gpu_memory_utilization=0.85), good)
    loop.run(store, settings, edges)
    finished = [r.event for r in store.read(types=["VerificationFinished"])]
    assert [(f.purpose, f.healthy) for f in finished] == [("commit", True), ("commit", False), ("rollback", True)]
    (rolled,) = [r.event for r in store.read(types=["RolledBack"])]
    assert rolled.restored_version == 2
    assert "gpu-memory-utilization: 0.79" in config_file.read_text()
    assert wait_healthy(settings.deployments["mistral"].health_url, 10)[0]
    # alerts: the failed verification and the rollback, the first delivery retried past a 500
    kinds = [r.event.kind for r in store.read(types=["AlertRaised"])]
    assert kinds == ["verification_failed", "rolled_back"]
    deliveries = [r.event for r in store.read(types=["AlertDelivered"])]
    assert [d.ok for d in deliveries] == [True, True]
    assert [a.status for a in deliveries[0].attempts] == [500, 200]
    assert [r["alert"]["kind"] for r in Webhook.received if r["status"] == 200] == kinds
    assert store.recorder.verify().ok
