"""A real vLLM server (CPU build, tiny generated model) whose KV cache is sized explicitly
(issue 15.3): utilization cannot help, so a max_model_len that vLLM estimates below the
operator's floor escalates without a canary, and the escalation names the flag."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from selfheal.edges.host_memory import HostMemoryInventory
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.handlers.ports import DeploymentEdges, NoPredictor
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import IncidentSource
from tests.realvllm.conftest import server_command
from tests.realvllm.test_real_vllm import GOOD, backend

pytestmark = pytest.mark.realvllm

KV = ("--kv-cache-memory-bytes", "1048576")  # 1 MiB: vLLM estimates a max_model_len of 896


def test_an_explicit_kv_size_escalates_without_a_canary_and_names_the_flag(real_env, tiny_model, tmp_path):
    production = GOOD.changed(max_model_len=4096)
    command = json.dumps(server_command(real_env, *KV))
    settings = parse_settings(f'mode = "dev"\n[deployments.tiny]\ncanary_backend = "vllm"\ncommand = {command}\n')
    bounds = ActuatorBounds(
        gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.05, max=0.3, step=0.05),
        max_num_seqs=Actuator(name="max_num_seqs", min=1, max=8, step=1),
        max_model_len=Actuator(name="max_model_len", min=1024, max=4096, step=512),  # the floor is above 896
        max_num_batched_tokens=Actuator(name="max_num_batched_tokens", min=512, max=16384, step=512))
    edges = DeploymentEdges(name="tiny", settings=settings.deployments["tiny"], bounds=bounds, current=production,
                            backend=backend(real_env, tiny_model, *KV), inventory=HostMemoryInventory(),
                            predictor=NoPredictor(), environment="env:realvllm-tiny-kv", model=tiny_model)
    failure = edges.backend.run(production, datetime.now(timezone.utc))
    assert not failure.measurements.started
    with open_store(tmp_path / "log.db", create=True) as store:
        loop.capture(store, edges, failure.log_text, IncidentSource(kind="file", path="vllm.log"))
        loop.run(store, settings, {"tiny": edges})
        assert not list(store.read(types=["CandidateProposed"]))
        (escalation,) = [r.event for r in store.read(types=["EscalationRaised"])]
        assert escalation.reason.startswith("seed fix outside the bounds: needs max_model_len=")
        assert escalation.reason.endswith(
            "; nothing else the finding names can move inside the bounds: gpu_memory_utilization cannot change the "
            "KV cache size, set explicitly by --kv-cache-memory-bytes 1048576 in the deployment's command")
