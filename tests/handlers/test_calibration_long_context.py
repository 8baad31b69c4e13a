"""The calibrated predictor on the real tier's long-context refusal (tests/realvllm/
test_real_heal_beyond_seed.py): vLLM 0.32's CPU build, the tiny model at max_model_len 1M and
utilization 0.06 on a 23.59 GiB host. Its two lines are all the calibration has before the
search: the worker's budget and overhead, and the KV one max-length request needs."""
from __future__ import annotations

from selfheal.handlers.models.calibration import StartFacts, calibrate, predict
from selfheal.handlers.observer.accounting import read_start
from selfheal.schemas.serving import ServingConfig

REFUSAL = (
    "(Worker pid=4586) INFO 12-06 07:18:14 [cpu_worker.py:260] Auto set (0.78/23.59) GiB for KV cache on node 0, "
    "with 1.42 GiB requested memory for the worker. 0.64 GiB memory was consumed by non-kv usages.\n"
    "(EngineCore pid=4566) ERROR 12-06 07:18:14 [core.py:1510] ValueError: To serve at least one request with the "
    "model's max seq len (1048576), (1.0 GiB KV cache is needed, which is larger than the available KV cache memory "
    "(0.78 GiB). Based on the available memory, the estimated maximum model length is 816000. Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` "
    "when initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
    "details.\n")
PRODUCTION = ServingConfig(gpu_memory_utilization=0.06, max_model_len=1 << 20, max_num_seqs=4,
                           max_num_batched_tokens=2048, enforce_eager=True)
#: what the real server then reported at utilization 0.08 ("CPU KV cache size: 1,310,336 tokens")
MEASURED_AT_008 = 1_310_336


def calibration():
    return calibrate([StartFacts(source="refusal", config=PRODUCTION, numbers=read_start(REFUSAL))])


def test_the_refusal_alone_calibrates_the_bytes_the_total_and_the_overhead():
    cal = calibration()
    assert cal.bytes_per_token == 1024 and cal.block_size == 128
    assert (cal.total_gib, cal.total_from, cal.overhead_gib, cal.reference_kv_gib) == (23.59, "log", 0.64, 0.78)


def test_more_utilization_is_predicted_to_start_within_a_percent_of_what_the_server_measured():
    made = predict(calibration(), PRODUCTION.changed(gpu_memory_utilization=0.08))
    assert made.starts is True
    assert abs(made.kv_tokens - MEASURED_AT_008) / MEASURED_AT_008 < 0.01
    assert made.low_tokens <= MEASURED_AT_008 <= made.high_tokens


def test_the_utilizations_around_the_edge_are_ruled_out_or_left_open():
    cal = calibration()
    # 0.78 + 0.01 x 23.59 GiB: 1.02 GiB, a hair over one request, inside the 10% band: not promised
    assert predict(cal, PRODUCTION.changed(gpu_memory_utilization=0.07)).starts is None
    assert predict(cal, PRODUCTION.changed(gpu_memory_utilization=0.065)).starts is False
    # the seed's own direction (a shorter context) is predicted to start at production's utilization
    assert predict(cal, PRODUCTION.changed(max_model_len=655360)).starts is True


def test_the_reason_shows_the_utilization_step_as_it_is():
    """A step of 0.025 read '+0.02 x 23.59 GiB' (two decimals), a figure the prediction never used."""
    made = predict(calibration(), PRODUCTION.changed(gpu_memory_utilization=0.085))
    assert ", +0.025 x 23.59 GiB total (log)" in made.reason, made.reason
