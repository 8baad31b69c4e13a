"""A deployment whose canaries are the faithful fake vLLM, as `selfheal.toml` text: what every
test that runs real canary processes on loopback shares."""
from __future__ import annotations

import json
import sys
from pathlib import Path

FAKE = Path(__file__).resolve().parent / "fake_vllm.py"
#: production's config in the workstation scenario, which most of these tests run
WORKSTATION = ("{gpu_memory_utilization = 0.9, max_model_len = 8192, max_num_seqs = 16, "
               "max_num_batched_tokens = 2048}")


def fake_vllm_deployment(name: str, *, scenario: str = "workstation-12gb-speech", env: dict | None = None,
                         wrapper: tuple[str, ...] = (), mode: str = "dev", keys: str = "", tables: str = "") -> str:
    """`mode` and one deployment `name`: canaries are the fake server (behind `wrapper`, an argv
    prefix), a short load phase, `keys` added to the deployment's table and `tables` after it."""
    command = [sys.executable, *wrapper, str(FAKE), "serve", "{model}", "--host", "{host}", "--port", "{port}"]
    variables = "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in {"FAKE_VLLM_SCENARIO": scenario,
                                                                     **(env or {})}.items())
    return (f'mode = "{mode}"\n[deployments.{name}]\ncanary_backend = "vllm"\nmodel = "fake-model"\n'
            f'inventory = "host"\ncommand = {json.dumps(command)}\nhealth_timeout_s = 60\n'
            f'current = {WORKSTATION}\n{keys}'
            f'[deployments.{name}.env]\n{variables}'
            f'[deployments.{name}.load]\nrequests = 4\nmax_concurrency = 2\nmax_tokens = 8\n{tables}')
