"""Issue 13, round two, item 9: a YAML bomb in the vLLM config hung the commit.

Found by an outside tester's scripts: a vLLM config with 11 nesting levels of aliases (a
"billion laughs") kept `selfheal run` at BaselineCommitStarted for over 150 s with the runner
lock held: PyYAML shares an alias's node, so loading is quick, but the commit compares and
dumps the expanded documents (9^11 strings). Deep nesting overflowed the composer's recursion
instead of giving an error, a recursive alias made the comparison recurse forever, and a
config of any size was read whole. Each case runs in a child process with a deadline and a
memory ceiling, so the code before the fix fails here instead of hanging the suite.
"""
from __future__ import annotations

import multiprocessing
import resource
import time
import traceback
from pathlib import Path

import pytest

from selfheal.edges import vllm_config
from selfheal.handlers.baseline import WriteConfig
from selfheal.schemas import vllm_yaml
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.events import BaselineCommitStarted
from selfheal.schemas.serving import ServingConfig
from tests.handlers.given_when_then import DEPLOYMENT, Given, deployment, settings

DEADLINE_S = 20.0
#: what each refusal must take at most, measured inside the child
TIME_BOUND_S = 3.0
MEMORY_CEILING = 1 << 30
CONFIG = ServingConfig(gpu_memory_utilization=0.8, max_model_len=4096, max_num_seqs=8, max_num_batched_tokens=2048)


def bomb(levels: int = 11) -> str:
    lines = ["max-model-len: 4096", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "billion laughs": bomb(),
    "two aliases a level, 40 levels": "max-num-seqs: 8\nl0: &l0 [x]\n" + "".join(
        f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 41)),
    "recursive alias": "max-num-seqs: 8\nloop: &loop [1, *loop]\n",
    "10,000 nested lists": "max-num-seqs: 8\ndeep: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "10,000 nested mappings": "max-num-seqs: 8\ndeep: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
    "20 MiB of keys": "max-num-seqs: 8\n" + "".join(f"key-{i:08d}: {i}\n" for i in range(1_000_000)),
}


def _mapped_bytes() -> int:
    """The address space this process already maps (a forked child inherits the suite's)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _child(conn, call):
    # the ceiling is what the call may add: the forked child starts with the whole suite's
    # address space mapped, which grows with every module the suite imports
    ceiling = _mapped_bytes() + MEMORY_CEILING
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    started = time.monotonic()
    try:
        result = ("returned", repr(call())[:300])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as it happened
        result = (type(exc).__name__, str(exc)[:1000] or traceback.format_exc()[-1000:])
    conn.send((*result, time.monotonic() - started))


def bounded(call) -> tuple[str, str, float]:
    """(outcome, message, seconds) of `call()` in a child process; fails past the deadline."""
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(child, call))
    proc.start()
    if not parent.poll(DEADLINE_S):
        proc.kill()
        proc.join()
        pytest.fail(f"still running after {DEADLINE_S:g} s")
    outcome = parent.recv()
    proc.join()
    return outcome


def _refused(outcome: tuple[str, str, float], path: Path) -> str:
    kind, message, seconds = outcome
    assert kind == "ConfigError", (kind, message)
    assert message.startswith(str(path)) and "\n" not in message, message
    assert seconds < TIME_BOUND_S, seconds
    return message


@pytest.fixture
def hostile(tmp_path):
    def write(name: str) -> Path:
        path = tmp_path / "vllm.yaml"
        path.write_text(HOSTILE[name])
        return path
    return write


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_commit_refuses_a_hostile_vllm_config_quickly_and_writes_nothing(name, hostile):
    path = hostile(name)
    before = path.read_bytes()
    _refused(bounded(lambda: vllm_config.commit(path, CONFIG, ActuatorBounds())), path)
    assert path.read_bytes() == before and not (path.parent / "vllm.yaml.previous").exists()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_reading_the_serving_values_refuses_a_hostile_vllm_config(name, hostile):
    """`baseline import`, `diagnose --config-file`, supervise: the same loader, the same limits."""
    path = hostile(name)
    _refused(bounded(lambda: vllm_yaml.read_serving_values(path)), path)


def test_a_rollback_refuses_a_hostile_previous_version(tmp_path):
    path = tmp_path / "vllm.yaml"
    path.write_text("max-num-seqs: 8\n")
    (tmp_path / "vllm.yaml.previous").write_text(bomb())
    message = _refused(bounded(lambda: vllm_config.restore_previous(path)), tmp_path / "vllm.yaml.previous")
    assert path.read_text() == "max-num-seqs: 8\n", message


def test_the_refusal_says_which_limit_and_where():
    refusals = {}
    for name in ("billion laughs", "recursive alias", "10,000 nested lists", "20 MiB of keys"):
        with pytest.raises(vllm_yaml.ConfigError) as caught:
            vllm_yaml.load_yaml(HOSTILE[name], "vllm.yaml")
        refusals[name] = str(caught.value)
    # the alias that crosses the limit: line 7 holds the first level past 100,000 strings (9^6)
    assert refusals["billion laughs"].startswith("vllm.yaml:7:10: refused: "), refusals
    assert f"at most {vllm_yaml.MAX_YAML_NODES:,}" in refusals["billion laughs"]
    assert "recursive alias" in refusals["recursive alias"]
    assert f"deeper than {vllm_yaml.MAX_YAML_DEPTH}" in refusals["10,000 nested lists"]
    assert refusals["20 MiB of keys"].startswith("vllm.yaml: refused: larger than 64 KiB"), refusals


def test_the_commit_activity_records_the_refusal_instead_of_hanging(tmp_path):
    path = tmp_path / "vllm.yaml"
    path.write_text(bomb())
    edges = deployment(settings(extra=f'config_file = "{path}"'), config_file=vllm_config.VllmYaml())
    given = Given((f"deployment-{DEPLOYMENT}", BaselineCommitStarted(
        commit_id="k2", deployment=DEPLOYMENT, promotion_id="p1", version=2, config=CONFIG, path=str(path))))

    def commit_write():
        then = given.when(WriteConfig(edges))
        return then.types, then.events[0].reason

    kind, message, seconds = bounded(commit_write)
    assert kind == "returned" and "PromotionNotCommitted" in message and str(path) in message, (kind, message)
    assert seconds < TIME_BOUND_S


ORDINARY = """\
# a real vLLM config, with the anchors people use to share a block
model: meta-llama/Llama-3.1-8B-Instruct
defaults: &defaults {dtype: bfloat16, seed: 0}
compilation-config: {cudagraph_capture_sizes: [1, 2, 4, 8, 16], level: 3}
override-generation-config: *defaults
hf-overrides: {rope_scaling: {rope_type: llama3, factor: 8.0}}
max-model-len: 8192
max-num-seqs: 16
gpu-memory-utilization: 0.9
"""


def test_an_ordinary_config_with_anchors_still_commits(tmp_path):
    path = tmp_path / "vllm.yaml"
    path.write_text(ORDINARY)
    assert vllm_yaml.read_serving_values(path) == {"max_model_len": 8192, "max_num_seqs": 16,
                                                   "gpu_memory_utilization": 0.9}
    result = vllm_config.commit(path, CONFIG, ActuatorBounds())
    assert result.changed and result.method == "lines"
    assert "override-generation-config: *defaults" in path.read_text()
