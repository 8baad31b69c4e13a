"""Scenario files: the bundled ones, their outcomes inside their bounds, and clear errors for bad ones."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from selfheal.edges.inventory import ScenarioInventory
from selfheal.handlers.ports import GpuInventory, InventoryUnavailable
from selfheal.edges.sim import ScenarioError, bundled_scenarios, load_scenario, parse_scenario, simulate
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import ServingConfig

GIB = 2**30

#: the current config's outcome, and one config inside the bounds that passes (None: no safe fix)
EXPECTED = {
    "a-llama8b-24gb": ("F5", {"max_model_len": 32768}),
    "b-qwen7b-16gb": ("F4", None),
    "c-mistral7b-shared-24gb": ("F1", {"gpu_memory_utilization": 0.78}),
    "d-llama70b-awq-tp2-a6000": (None, {}),
    "d-llama70b-awq-tp2-l40s": ("F5", {"gpu_memory_utilization": 0.9}),
    "no-safe-fix": ("F2", None),
    "rt-preemption-storm-l4": ("F7", {"max_num_seqs": 8}),
    "rt-refused-long-prompts-a10g": (None, {"max_model_len": 5120}),   # starts; refuses requests under load
    "sw-mistral7b-v01-rtx3090-comfyui": ("F1", {"gpu_memory_utilization": 0.77}),
    "fp8kv-llama8b-l4-64k": ("F5", {"gpu_memory_utilization": 0.95}),
    "workstation-12gb-speech": ("F1", {"gpu_memory_utilization": 0.65}),
}


def test_bundled_names():
    # issue 15's scenarios are declared in test_scenarios_issue15.py, which checks every bundled name
    assert set(EXPECTED) <= set(bundled_scenarios())
    for name in bundled_scenarios():
        s = load_scenario(name)
        assert s.name == name == Path(s.source).stem


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_current_outcome_and_a_passing_config_inside_the_bounds(name):
    mode, fix = EXPECTED[name]
    s = load_scenario(name)
    assert simulate(s).failure_mode == mode
    if fix is not None:
        config = s.current.changed(**fix)
        assert s.actuators.violations(config) == []
        r = simulate(s, config)
        assert r.started and r.passed_load, r.excerpt


@pytest.mark.parametrize("name", ["b-qwen7b-16gb", "no-safe-fix"])
def test_no_config_inside_the_bounds_starts(name):
    s = load_scenario(name)
    b = s.actuators
    for util, seqs, mml, mnbt, eager in itertools.product(
            b.gpu_memory_utilization.grid(), b.max_num_seqs.grid(), b.max_model_len.grid()[::3],
            [b.max_num_batched_tokens.min, 2048, b.max_num_batched_tokens.max], [False, True]):
        config = ServingConfig(gpu_memory_utilization=util, max_num_seqs=seqs, max_model_len=mml,
                               max_num_batched_tokens=mnbt, enforce_eager=eager)
        assert not simulate(s, config).started, config


def test_actuators_parse_into_bounds():
    a = load_scenario("a-llama8b-24gb").actuators
    assert a.max_model_len.max == 131072 and a.max_num_seqs.max == 256 and a.gpu_memory_utilization.step == 0.01
    assert load_scenario("workstation-12gb-speech").actuators == ActuatorBounds()   # MISSION's 12 GB defaults


def test_partial_actuator_override_keeps_the_defaults():
    text = Path(load_scenario("no-safe-fix").source).read_text() + "\n[actuators]\nmax_model_len = { max = 16384 }\n"
    b = parse_scenario(text, source="x.toml").actuators
    assert (b.max_model_len.min, b.max_model_len.max, b.max_model_len.step) == (1024, 16384, 512)
    assert b.max_num_seqs == ActuatorBounds().max_num_seqs


GOOD = Path(__file__).resolve().parents[2] / "edges" / "sim" / "scenarios" / "c-mistral7b-shared-24gb.toml"


def broken(tmp_path, old, new):
    text = GOOD.read_text()
    assert old in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, new, key, problem", [
    ("layers = 32\n", "", "model.layers", "missing required key"),
    ("layers = 32\n", 'layers = "32"\n', "model.layers", "expected `int`, got `str`"),
    ("used_gib = 4.0\n", "used_gib = 4.0\nshare = 1\n", "cotenants[0].share", "unknown key"),
    ("max_num_seqs = 256\n", "", "current.max_num_seqs", "missing required key"),
    ("enforce_eager = false\n", "enforce_eager = 0\n", "current.enforce_eager", "expected `bool`, got `int`"),
    ("total_gib = 23.53\n", "total_gib = -1\n", "gpu.total_gib", "expected `float` > 0.0"),
    ("kv_heads = 8\n", "kv_heads = 64\n", "model.kv_heads", "64 exceeds attention_heads (32)"),
    ("peak_gib = 4.4 ", "gpu = 1\npeak_gib = 4.4 ", "cotenants[0].gpu", "GPU 1 does not exist (gpu.count = 1)"),
    ("[workload]\n", "[workload]\nrequests_per_user = 2\n", "workload.requests_per_user", "unknown key"),
])
def test_bad_file_names_file_and_key(tmp_path, old, new, key, problem):
    path = broken(tmp_path, old, new)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert e.value.file == str(path) and e.value.key == key
    assert e.value.problem == problem
    assert str(e.value) == f"scenario file {path}: key '{key}': {problem}"


def test_toml_syntax_error(tmp_path):
    path = broken(tmp_path, "layers = 32\n", "layers = = 32\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(str(path))
    assert str(path) in str(e.value) and "TOML syntax error" in str(e.value) and "line" in str(e.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(GOOD.read_bytes().replace(b"whisper-tts", "whisper-\xe9".encode("latin-1")))
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert str(path) in str(e.value) and "not UTF-8 text" in str(e.value)


def test_unknown_scenario_name():
    with pytest.raises(ScenarioError) as e:
        load_scenario("llama-on-a-toaster")
    assert "llama-on-a-toaster" in str(e.value) and "a-llama8b-24gb" in str(e.value)


def test_scenario_inventory_answers_from_the_file():
    inv = ScenarioInventory(load_scenario("c-mistral7b-shared-24gb"))
    assert isinstance(inv, GpuInventory)
    [gpu] = inv.snapshot()
    assert gpu.index == 0 and gpu.name == "NVIDIA GeForce RTX 3090" and gpu.source == "simulated"
    assert gpu.total_bytes == round(23.53 * GIB)
    assert [(p.pid, p.name, p.used_bytes) for p in gpu.processes] == [(3150, "whisper-tts", 4 * GIB)]
    assert gpu.used_bytes == 4 * GIB and gpu.free_bytes == gpu.total_bytes - 4 * GIB
    two = ScenarioInventory(load_scenario("d-llama70b-awq-tp2-a6000")).snapshot()
    assert [g.index for g in two] == [0, 1] and all(g.processes == [] and g.used_bytes == 0 for g in two)


def test_inventory_unavailable_says_why():
    e = InventoryUnavailable("NVML Shared Library Not Found")
    assert "GPU inventory unavailable (nvml): NVML Shared Library Not Found" in str(e)
    assert "no canary is started" in str(e)
