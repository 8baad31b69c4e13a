"""A more faithful simulator (issue 15.10): sliding-window layers, an fp8 KV cache, a GPU's compute
capability refusing dtypes and quantizations, and vLLM's kv_cache_memory_bytes as an actuator."""
from __future__ import annotations

import msgspec
import pytest

from selfheal.edges.sim import ScenarioError, load_scenario, parse_scenario, simulate
from selfheal.edges.sim.scenario import SCENARIO_DIR
from selfheal.handlers.models.memory import BLOCK_SIZE, GIB, account, kv_bytes_per_token, request_blocks
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.serving import ServingConfig

BASE = (SCENARIO_DIR / "a-llama8b-24gb.toml").read_text()   # Llama-3.1-8B on a 24 GB RTX 4090


def variant(*edits: tuple[str, str], name: str = "variant"):
    text = BASE
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    return parse_scenario(text, source=name)


SLIDING_ALL = ('dtype_bytes = 2', 'dtype_bytes = 2\nsliding_window = 4096')              # Mistral v0.1's shape
SLIDING_HALF = ('dtype_bytes = 2', 'dtype_bytes = 2\nsliding_window = 4096\nsliding_layers = 16')  # Gemma-2's
FP8 = ('[current]', '[engine]\nkv_cache_dtype = "fp8"\n\n[current]')
T4 = ('tflops = 82.0', 'tflops = 82.0\ncompute_capability = "7.5"')
V100 = ('tflops = 82.0', 'tflops = 82.0\ncompute_capability = "7.0"')


# --- fp8 KV cache ---------------------------------------------------------------------------------

def test_an_fp8_kv_cache_halves_the_bytes_per_token_and_doubles_the_tokens():
    s, fp8 = load_scenario("a-llama8b-24gb"), variant(FP8)
    assert kv_bytes_per_token(fp8) * 2 == kv_bytes_per_token(s) == 2 * 32 * 8 * 128 * 2
    config = s.current.changed(max_model_len=32768)
    auto, half = simulate(s, config), simulate(fp8, config)
    assert auto.available_kv_gib == half.available_kv_gib          # the same memory ...
    assert half.num_gpu_blocks in (2 * auto.num_gpu_blocks, 2 * auto.num_gpu_blocks + 1)  # ... twice the blocks
    assert "kv_cache_dtype=fp8" in half.log_text and "kv_cache_dtype=auto" in auto.log_text
    assert "'kv_cache_dtype': 'fp8'" in half.log_text                # vLLM's non-default args


def test_fp8_makes_a_length_fit_that_bf16_cannot():
    s, fp8 = load_scenario("a-llama8b-24gb"), variant(FP8)
    config = s.current.changed(max_model_len=65536)
    assert simulate(s, config).failure_kind == "max_model_len_exceeds_kv_cache"
    assert simulate(fp8, config).started


# --- sliding-window layers ------------------------------------------------------------------------

def test_a_sliding_layer_stops_growing_at_the_window():
    s = variant(SLIDING_ALL)
    config = s.current.changed(max_num_batched_tokens=2048)
    cap = -(-(4096 - 1 + 2048) // BLOCK_SIZE) + 1                   # window - 1 + mnbt tokens, plus one block
    assert request_blocks(s, config, 1000) == -(-1000 // BLOCK_SIZE)  # under the window: one block per 16 tokens
    assert request_blocks(s, config, 100_000) == cap == request_blocks(s, config, 131072)
    half = variant(SLIDING_HALF)
    full = -(-100_000 // BLOCK_SIZE)
    assert request_blocks(half, config, 100_000) == -(-(16 * full + 16 * cap) // 32)


def test_sliding_windows_let_the_derived_length_start_where_full_attention_cannot():
    full, window, hybrid = load_scenario("a-llama8b-24gb"), variant(SLIDING_ALL), variant(SLIDING_HALF)
    assert simulate(full).failure_kind == "max_model_len_exceeds_kv_cache"   # 131072 tokens do not fit
    r = simulate(window)
    assert r.started and r.passed_load and r.max_concurrency > 5
    # half the layers full: it still does not fit, but vLLM's estimate reaches further than 43k tokens
    h, f = simulate(hybrid), simulate(full)
    assert h.failure_kind == "max_model_len_exceeds_kv_cache"
    assert h.estimated_max_model_len > f.estimated_max_model_len == f.num_gpu_blocks * 0 + 43408
    fits = simulate(hybrid, hybrid.current.changed(max_model_len=h.estimated_max_model_len))
    too_long = simulate(hybrid, hybrid.current.changed(max_model_len=h.estimated_max_model_len + BLOCK_SIZE))
    assert fits.started and too_long.failure_kind == "max_model_len_exceeds_kv_cache"


def test_a_sliding_model_serves_its_load_step_by_step():
    s = variant(SLIDING_ALL)
    config = s.current.changed(max_model_len=32768, max_num_seqs=64)
    r = simulate(s, config, render=False)
    assert r.started and r.requests_completed == s.workload.requests


def test_sliding_layers_are_checked():
    with pytest.raises(ScenarioError, match="model.sliding_layers.*exceeds layers"):
        variant(('dtype_bytes = 2', 'dtype_bytes = 2\nsliding_window = 4096\nsliding_layers = 40'))
    with pytest.raises(ScenarioError, match="model.sliding_layers.*without model.sliding_window"):
        variant(('dtype_bytes = 2', 'dtype_bytes = 2\nsliding_layers = 4'))


# --- compute capability ---------------------------------------------------------------------------

def test_bfloat16_below_capability_8_is_refused_at_worker_start_in_vllms_words():
    s = variant(T4, ('name = "NVIDIA GeForce RTX 4090"', 'name = "Tesla T4"'))
    r = simulate(s, s.current.changed(max_model_len=8192))
    assert (r.started, r.failure_stage, r.failure_mode, r.failure_kind) == (False, "startup", "F0", "other_config_error")
    assert r.excerpt.endswith(
        "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your Tesla T4 GPU "
        "has compute capability 7.5. You can use float16 instead by explicitly setting the`dtype` flag "
        "in CLI, for example: --dtype=half.")
    assert "Loading weights" not in r.log_text                  # refused before the weights load
    half = variant(T4, ('dtype_bytes = 2', 'dtype_bytes = 2\ndtype = "float16"'))
    assert simulate(half, half.current.changed(max_model_len=8192)).started
    assert "dtype=torch.float16" in simulate(half, half.current.changed(max_model_len=8192)).log_text


def test_a_quantization_below_its_minimum_capability_is_a_config_error_in_vllms_words():
    s = variant(V100, ('architecture = "LlamaForCausalLM"', 'architecture = "LlamaForCausalLM"\nquantization = "awq"'),
                ('dtype_bytes = 2', 'dtype_bytes = 2\ndtype = "float16"'))
    r = simulate(s, s.current.changed(max_model_len=8192))
    assert (r.started, r.failure_stage, r.failure_kind) == (False, "config", "other_config_error")
    assert ("Value error, The quantization method awq is not supported for the current GPU. Minimum capability: 75. "
            "Current capability: 70.") in r.excerpt
    ok = variant(T4, ('architecture = "LlamaForCausalLM"', 'architecture = "LlamaForCausalLM"\nquantization = "awq"'),
                 ('dtype_bytes = 2', 'dtype_bytes = 2\ndtype = "float16"'))
    assert simulate(ok, ok.current.changed(max_model_len=8192)).started   # 7.5 meets AWQ's 75


def test_a_capability_is_major_dot_minor():
    with pytest.raises(ScenarioError, match="gpu.compute_capability"):
        variant(('tflops = 82.0', 'tflops = 82.0\ncompute_capability = "sm_75"'))


# --- kv_cache_memory_bytes ------------------------------------------------------------------------

def test_kv_cache_memory_bytes_sizes_the_cache_whatever_the_utilization():
    s = load_scenario("a-llama8b-24gb")
    config = s.current.changed(max_model_len=32768, kv_cache_memory_bytes=4 * GIB)
    low, high = (simulate(s, config.changed(gpu_memory_utilization=u)) for u in (0.7, 0.9))
    assert low.available_kv_gib == high.available_kv_gib == 4.0
    assert low.kv_cache_tokens == high.kv_cache_tokens == 4 * GIB // kv_bytes_per_token(s) // BLOCK_SIZE * BLOCK_SIZE
    assert "Reserved 4.0 GiB for KV cache as specified by kv_cache_memory_bytes config" in low.log_text
    assert "'kv_cache_memory_bytes': 4294967296" in low.log_text
    # without it utilization sizes the cache
    assert simulate(s, config.changed(kv_cache_memory_bytes=None, gpu_memory_utilization=0.7)).available_kv_gib < \
        simulate(s, config.changed(kv_cache_memory_bytes=None)).available_kv_gib


def test_a_kv_size_beyond_what_is_free_fails_and_utilization_still_gates_the_start():
    s = load_scenario("a-llama8b-24gb")
    config = s.current.changed(max_model_len=32768)
    assert simulate(s, config.changed(kv_cache_memory_bytes=8 * GIB)).failure_kind == "cuda_graph_oom"
    st = account(s, config.changed(kv_cache_memory_bytes=4 * GIB, gpu_memory_utilization=0.99))
    assert st.failure is not None and st.failure.mode == "F1"   # §1.1: the gate applies even with a size given
    with pytest.raises(ValueError, match="kv_cache_memory_bytes=0"):
        account(s, config.changed(kv_cache_memory_bytes=0))


def test_kv_cache_memory_bytes_is_an_actuator_only_where_a_deployment_names_its_range():
    assert "kv_cache_memory_bytes" not in ActuatorBounds().numeric()
    bounds = ActuatorBounds(kv_cache_memory_bytes=Actuator(name="kv_cache_memory_bytes", min=GIB, max=8 * GIB,
                                                           step=GIB // 2))
    assert bounds.numeric()["kv_cache_memory_bytes"].grid()[:2] == [GIB, GIB + GIB // 2]
    assert bounds.violations(ServingConfig(max_num_seqs=8, max_model_len=4096, kv_cache_memory_bytes=9 * GIB)) == [
        f"kv_cache_memory_bytes={9 * GIB} outside [{GIB:g}, {8 * GIB:g}]"]
    assert bounds.violations(ServingConfig(max_num_seqs=8, max_model_len=4096)) == []   # unset: vLLM's own sizing
    text = BASE + '\nkv_cache_memory_bytes = { min = 1073741824, max = 8589934592, step = 536870912 }\n'
    assert parse_scenario(text).actuators.kv_cache_memory_bytes.max == 8 * GIB
    with pytest.raises(ScenarioError, match="actuators.kv_cache_memory_bytes.*min, max and step"):
        parse_scenario(BASE + '\nkv_cache_memory_bytes = { max = 8589934592 }\n')


def test_the_config_value_flag_dict_and_old_logs():
    config = ServingConfig(kv_cache_memory_bytes=3 * GIB)
    assert config.cli_args()[-2:] == ["--kv-cache-memory-bytes", str(3 * GIB)]
    assert "--kv-cache-memory-bytes" not in ServingConfig().cli_args()
    assert "kv_cache_memory_bytes" not in ServingConfig().as_dict()
    assert config.as_dict()["kv_cache_memory_bytes"] == 3 * GIB
    assert ServingConfig().diff(config) == {"kv_cache_memory_bytes": (None, 3 * GIB)}
    # a config recorded before the field existed decodes as "unset"
    old = b'{"gpu_memory_utilization":0.9,"max_model_len":8192,"max_num_seqs":256,"max_num_batched_tokens":2048,' \
          b'"enforce_eager":false}'
    assert msgspec.json.decode(old, type=ServingConfig).kv_cache_memory_bytes is None
