"""The canary's load phase as a real deployment is wired: what selfheal.toml says reaches the
vllm backend (issue 15.4: the load covers production's longest prompt)."""
from __future__ import annotations

from selfheal.edges.deployments import build
from selfheal.schemas.config import parse_settings

REAL = ('[deployments.q]\ncanary_backend = "vllm"\n'
        'command = ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}"]\n'
        'model = "Qwen/Qwen2.5-7B-Instruct"\n'
        "current = {gpu_memory_utilization = 0.9, max_model_len = 8192, max_num_seqs = 16, "
        "max_num_batched_tokens = 8192}\n")


def test_the_load_reaches_production_s_longest_prompt_by_default():
    load = build(parse_settings(REAL))["q"].backend.load
    assert (load.prompt_fraction, load.longest_prompt_tokens) == (1.0, None)


def test_longest_prompt_tokens_reaches_the_backend():
    settings = parse_settings(REAL + "[deployments.q.load]\nlongest_prompt_tokens = 6000\nprompt_fraction = 0.5\n")
    load = build(settings)["q"].backend.load
    assert (load.prompt_fraction, load.longest_prompt_tokens) == (0.5, 6000)
