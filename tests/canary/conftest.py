"""Fixtures for the canary tests: the fake vLLM server and a check that no canary outlives its test.

Every canary a test starts gets a canary id from `canary_ids`; after the test, /proc must show
no process that carries one of those ids in its environment (SELFHEAL_CANARY_ID). Whatever is
found is killed, so one failure does not leak into the next test, and the test fails.
"""
from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from selfheal.edges.processes import marked_processes
from selfheal.edges.vllm_backend import LoadSettings, VllmCanaryBackend

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_vllm.py"
FAKE_COMMAND = [sys.executable, str(FAKE), "serve", "{model}", "--host", "{host}", "--port", "{port}"]
MODEL = "meta-llama/Llama-3.2-3B-Instruct"
#: small and quick: 8 requests of 8 tokens each, 2 ms a token
FAST_LOAD = LoadSettings(requests=8, max_concurrency=4, max_tokens=8, request_timeout_s=10, deadline_s=20)


class CanaryIds:
    def __init__(self) -> None:
        self.issued: list[str] = []

    def __call__(self) -> str:
        cid = f"test-{uuid.uuid4().hex[:12]}"
        self.issued.append(cid)
        return cid

    def survivors(self) -> dict[str, list[int]]:
        return {cid: pids for cid in self.issued if (pids := marked_processes(cid))}


@pytest.fixture
def canary_ids():
    ids = CanaryIds()
    yield ids
    left = ids.survivors()
    for pids in left.values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not left, f"canary processes outlived their test: {left}"


@pytest.fixture
def backend_for(monkeypatch):
    """backend_for(env={...}, **kwargs): the vllm backend driving the fake server."""
    def make(env: dict | None = None, **kwargs) -> VllmCanaryBackend:
        kwargs.setdefault("load", FAST_LOAD)
        kwargs.setdefault("health_timeout_s", 30)
        kwargs.setdefault("grace_s", 3)
        return VllmCanaryBackend(FAKE_COMMAND, MODEL, env={"FAKE_VLLM_SCENARIO": "workstation-12gb-speech",
                                                          **(env or {})}, **kwargs)
    return make
