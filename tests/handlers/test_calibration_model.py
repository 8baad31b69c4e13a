"""The calibrated predictor (issue 15.5) on numbers real vLLM servers printed: the CPU build's
logs of this project's real tier (tests/observer/samples/real/) and GPU excerpts from the wild."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.handlers.models.calibration import (
    GIB, MIN_BAND, PRIOR_BAND, StartFacts, band_of, calibrate, captures, predict,
)
from selfheal.handlers.observer import RuleSet, builtin_ruleset
from selfheal.handlers.observer.accounting import diagnose_and_account, read_start
from selfheal.handlers.predict import CalibratedPredictor
from selfheal.schemas.serving import ServingConfig

SAMPLES = Path(__file__).resolve().parents[1] / "observer" / "samples"
# the real tier's server: tiny-llama, bfloat16, eager (tests/realvllm)
TINY = ServingConfig(gpu_memory_utilization=0.15, max_model_len=2048, max_num_seqs=4, max_num_batched_tokens=2048,
                     enforce_eager=True)


def start(name: str, config: ServingConfig, source: str = "") -> StartFacts:
    return StartFacts(source=source or name, config=config, numbers=read_start((SAMPLES / name).read_text()))


def test_a_real_cpu_start_is_read_with_its_explicit_kv_size_and_tokens():
    numbers = read_start((SAMPLES / "real" / "healthy-startup.log").read_text())
    assert numbers["cal_explicit_kv_gib"] == 1.0 and numbers["cal_total_gib"] == 8.34
    assert numbers["cal_cpu_kv_tokens"] == 1_048_576


def test_the_cpu_build_costs_1_kib_a_token_and_an_explicit_size_fixes_the_tokens():
    healthy = start("real/healthy-startup.log", TINY.changed(max_num_seqs=4))
    cal = calibrate([healthy])
    assert cal.bytes_per_token == 1024 and cal.block_size == 128
    # the environment's explicit size holds whatever utilization says: the measured tokens again
    made = predict(cal, TINY.changed(gpu_memory_utilization=0.5))
    assert made.kv_tokens == 1_048_576 and made.starts is True


def test_the_null_block_is_what_vllm_estimated_for_1_mib_of_cache():
    """The real F5 log: 1 MiB of cache at max_model_len 4096; vLLM estimated 896 tokens, which is
    the 8 blocks of 128 tokens that 1 MiB holds, less the null block."""
    cal = calibrate([start("real/healthy-startup.log", TINY)])
    f5 = read_start((SAMPLES / "real" / "f5-max-model-len.log").read_text())
    made = predict(cal, TINY.changed(max_model_len=4096, kv_cache_memory_bytes=1048576))
    assert made.kv_tokens - cal.block_size == f5["estimated_max_model_len"] == 896
    assert made.starts is False and made.failure_kind == "max_model_len_exceeds_kv_cache"
    assert predict(cal, TINY.changed(max_model_len=896, kv_cache_memory_bytes=1048576)).starts is not False
    # 1024 tokens is all 1 MiB holds, null block included: vLLM refuses it, and so does the model
    assert predict(cal, TINY.changed(max_model_len=1024, kv_cache_memory_bytes=1048576)).starts is False


def test_the_cpu_builds_failure_gives_the_overhead_and_a_utilization_predicts_the_kv():
    """utilization 0.02 failed with a budget of 0.17 GiB and -0.51 GiB left for KV: the worker
    held 0.68 GiB beside the cache. At 0.15 the KV cache is 0.13 x 8.34 GiB more than -0.51."""
    failed = start("real/cpu-kv-utilization.log", TINY.changed(gpu_memory_utilization=0.02))
    tokens = start("real/healthy-startup.log", TINY)
    cal = calibrate([tokens, failed])
    assert cal.overhead_gib == pytest.approx(0.68) and cal.total_gib == 8.34
    made = predict(cal, TINY.changed(gpu_memory_utilization=0.15))
    assert made.kv_gib == pytest.approx(-0.51 + 0.13 * 8.34, abs=1e-4)
    assert made.kv_tokens == int((-0.51 + 0.13 * 8.34) * GIB / (1024 * 128)) * 128
    low = predict(cal, TINY.changed(gpu_memory_utilization=0.02))
    assert low.starts is False and low.failure_kind == "no_kv_cache_memory"


def test_bytes_per_token_from_a_gpu_start_is_the_models():
    """Qwen3-1.7B: 28 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes = 114,688 bytes a token;
    vLLM printed 18.78 GiB and 175,856 tokens."""
    cal = calibrate([start("wild/none/448-v1-qwen3-1p7b-kv-175k.log", ServingConfig())])
    assert cal.bytes_per_token == pytest.approx(114_688, rel=5e-4)
    made = predict(cal, ServingConfig(kv_cache_memory_bytes=8 * GIB))
    assert made.kv_tokens == pytest.approx(8 * GIB / 114_688, rel=1e-3)


def test_vllms_v0_accounting_is_the_overhead_of_its_formula():
    """available = utilization x total - (weights + non-torch + activation peak), as V0 printed it."""
    numbers = read_start((SAMPLES / "wild/none/435-marlin-moe-tp-profiling-099.log").read_text())
    accounting = numbers["cal_weights_gib"], numbers["cal_non_torch_gib"], numbers["cal_activation_gib"]
    assert accounting == (21.21, 0.2, 0.37)
    facts = StartFacts(source="v0", config=ServingConfig(gpu_memory_utilization=0.99), numbers=numbers,
                       measured_tokens=12_800)
    cal = calibrate([facts])
    assert cal.overhead_gib == pytest.approx(21.21 + 0.2 + 0.37, abs=0.01)
    made = predict(cal, ServingConfig(gpu_memory_utilization=0.97))
    assert made.kv_gib == pytest.approx(0.97 * 23.58 - (0.99 * 23.58 - 1.57), abs=1e-4)


def test_the_activation_peak_moves_with_the_batched_tokens():
    numbers = {"cal_total_gib": 80.0, "cal_kv_gib": 60.0, "cal_activation_gib": 1.2, "cal_kv_tokens": 491_520.0}
    config = ServingConfig(gpu_memory_utilization=0.9, max_num_batched_tokens=8192)
    cal = calibrate([StartFacts(source="a", config=config, numbers=numbers)])
    doubled = predict(cal, config.changed(max_num_batched_tokens=16384))
    assert doubled.kv_gib == pytest.approx(60.0 - 1.2)


def test_the_band_narrows_after_good_predictions_and_widens_after_a_bad_one():
    assert band_of([], 0.0) == PRIOR_BAND
    assert band_of([0.02, -0.01], 0.0) == pytest.approx(0.03)
    assert band_of([0.02, -0.01, 0.2], 0.0) == pytest.approx(0.3)
    assert band_of([0.0], 0.0) == MIN_BAND
    cal = calibrate([start("wild/none/448-v1-qwen3-1p7b-kv-175k.log", ServingConfig())])
    config = ServingConfig(kv_cache_memory_bytes=8 * GIB)
    wide, narrow = predict(cal, config, [0.2]), predict(cal, config, [0.01])
    assert wide.high_tokens - wide.low_tokens > 10 * (narrow.high_tokens - narrow.low_tokens) > 0
    assert narrow.low_tokens <= narrow.kv_tokens <= narrow.high_tokens


def test_a_budget_over_the_free_memory_at_the_last_start_does_not_start():
    numbers = {"cal_free_gib": 8.41, "cal_total_gib": 11.66, "cal_kv_gib": 1.89, "cal_kv_tokens": 17_696.0}
    cal = calibrate([StartFacts(source="s", config=ServingConfig(gpu_memory_utilization=0.7, max_model_len=2048),
                                numbers=numbers)])
    made = predict(cal, ServingConfig(gpu_memory_utilization=0.9, max_model_len=2048))
    assert made.starts is False and made.failure_kind == "startup_free_memory_below_utilization"
    fits = predict(cal, ServingConfig(gpu_memory_utilization=0.7, max_model_len=2048))
    assert fits.kv_tokens == 17_696 and fits.starts is True


def test_without_a_start_that_printed_its_cache_the_predictor_cannot_say():
    cal = calibrate([start("real/max-model-len-above-derived.log", TINY.changed(max_model_len=16384))])
    made = predict(cal, TINY)
    assert made.kv_tokens is None and made.starts is None
    assert CalibratedPredictor(cal).predict(TINY, TINY).passes is None


def test_the_port_says_what_the_model_says():
    cal = calibrate([start("real/healthy-startup.log", TINY)])
    port = CalibratedPredictor(cal)
    assert port.predict(TINY.changed(max_model_len=4096, kv_cache_memory_bytes=1048576), TINY).passes is False
    assert port.predict(TINY, TINY).passes is True


def test_cuda_graph_captures_follow_max_num_seqs_as_vllm_picks_them():
    """memory_model.md 1.9: 51 capture sizes at 512, 19 at 128, 11 at 64; none in eager mode."""
    base = ServingConfig(max_num_batched_tokens=8192)
    assert [captures(base.changed(max_num_seqs=n)) for n in (256, 64, 32)] == [51, 19, 11]
    assert captures(base.changed(enforce_eager=True)) == 0


def test_the_cuda_graph_estimate_moves_with_the_captures_and_eager_mode_frees_it():
    numbers = {"cal_total_gib": 23.53, "available_kv_gib": 2.65, "cal_kv_tokens": 21_664.0,
               "cal_cudagraph_estimate_gib": 0.45}
    ref = ServingConfig(gpu_memory_utilization=0.72, max_model_len=16384, max_num_seqs=16)
    cal = calibrate([StartFacts(source="r", config=ref, numbers=numbers)])
    fewer = predict(cal, ref.changed(max_num_seqs=8))     # 5 capture sizes instead of 7
    assert fewer.kv_gib == pytest.approx(2.65 + 0.45 * 2 / 7, abs=1e-4)
    assert predict(cal, ref.changed(enforce_eager=True)).kv_gib == pytest.approx(2.65 + 0.45)
    off = calibrate([StartFacts(source="r", config=ref, numbers={**numbers, "cal_cudagraph_estimator": 0.0})])
    assert predict(off, ref.changed(enforce_eager=True)).kv_gib == pytest.approx(2.65)


def test_the_cpu_builds_utilization_start_predicts_another_utilization():
    """The real tier's server at utilization 0.10 on a 23.59 GiB host ("Auto set (1.74/23.59)",
    0.62 GiB beside the cache, 1,826,304 tokens); the same server then reported 2,815,616 tokens
    at 0.14 (tests/realvllm/test_real_predictor.py, run 2026-12-06)."""
    text = (SAMPLES / "healthy_cpu_kv_v0_32.log").read_text()
    first = StartFacts(source="first", config=TINY.changed(gpu_memory_utilization=0.10), numbers=read_start(text))
    assert first.numbers["cal_overhead_gib"] == 0.62 and first.numbers["cal_cpu_kv_tokens"] == 1_826_304
    cal = calibrate([first])
    assert cal.bytes_per_token == pytest.approx(1024, rel=3e-3) and cal.total_from == "log"
    made = predict(cal, TINY.changed(gpu_memory_utilization=0.14))
    assert made.kv_gib == pytest.approx(1.74 + 0.04 * 23.59, abs=1e-4)
    assert abs(made.kv_tokens - 2_815_616) <= 0.01 * 2_815_616


@pytest.mark.parametrize("name", sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.glob("*.log"))
                         + sorted(p.relative_to(SAMPLES).as_posix() for p in (SAMPLES / "real").glob("*.log")))
def test_one_scan_gives_the_observers_diagnosis_and_the_accounting(name):
    text = (SAMPLES / name).read_text()
    rules = builtin_ruleset()
    diagnosis, accounting = diagnose_and_account(rules, text, ServingConfig())
    assert diagnosis == rules.diagnose(text, ServingConfig()) and accounting == read_start(text)
    # an active rule set without the calibration rules still gets the accounting (a scan of its own)
    bare = RuleSet([r for r in rules.rules if not r.id.startswith("vllm.cal.")])
    diagnosis, accounting = diagnose_and_account(bare, text, ServingConfig())
    assert diagnosis == bare.diagnose(text, ServingConfig()) and accounting == read_start(text)
