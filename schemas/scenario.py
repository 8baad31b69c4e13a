"""A scenario: one deployment the simulator and the models can start, as plain frozen Structs.

The GPU(s), what else runs on them (co-tenants), the model's shape, the engine's switches, the
production config, the load a canary replays, and the actuator bounds that make sense for that
card. edges/sim/scenario.py reads them from TOML files; handlers/models computes with them.
"""
from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import ServingConfig

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class GpuSpec(Strict, kw_only=True):
    name: str
    #: total memory as vLLM reports it (cudaMemGetInfo), e.g. 23.53 for a 24 GB card (memory_model.md §1.1.5)
    total_gib: Positive
    #: GPUs used; the simulator runs one worker per GPU, i.e. tensor_parallel_size = count
    count: PositiveInt = 1
    #: memory bandwidth and effective dense bf16 throughput for the roofline of memory_model.md §4
    bandwidth_tbs: Positive
    tflops: Positive
    #: CUDA compute capability, e.g. "7.5" (T4), "8.6" (A10G, RTX 3090), "8.9" (L4, L40S), "9.0" (H100);
    #: None: not checked. vLLM refuses bfloat16 below 8.0 and each quantization below its minimum
    compute_capability: str | None = None

    @property
    def capability(self) -> int | None:
        """As vLLM compares it: "8.6" -> 86 (DeviceCapability.to_int)."""
        if self.compute_capability is None:
            return None
        major, _, minor = self.compute_capability.partition(".")
        return int(major) * 10 + int(minor or 0)


class Cotenant(Strict, kw_only=True):
    name: str
    pid: PositiveInt
    used_gib: NonNegative
    #: what it grows to during the load phase (speech bursts); growth beyond the slack is F8
    peak_gib: NonNegative | None = None
    gpu: Annotated[int, msgspec.Meta(ge=0)] = 0

    @property
    def growth_gib(self) -> float:
        return max(0.0, (self.peak_gib if self.peak_gib is not None else self.used_gib) - self.used_gib)


class ModelSpec(Strict, kw_only=True):
    name: str
    architecture: str = "LlamaForCausalLM"
    #: as vLLM's engine config prints it, e.g. "awq_marlin"; None for bf16 checkpoints
    quantization: str | None = None
    layers: PositiveInt
    attention_heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    vocab_size: PositiveInt
    max_position_embeddings: PositiveInt
    #: total parameters in billions; drives the compute term of the roofline
    params_b: Positive
    #: weight memory per GPU as "Model loading took X GiB" would print it (memory_model.md §1.2)
    weights_gib: Positive
    #: bytes per KV / activation element (2 for bf16/fp16, memory_model.md §1.4)
    dtype_bytes: PositiveInt = 2
    #: the dtype vLLM runs the model in ("auto" resolves to the checkpoint's, usually bfloat16)
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    #: sliding-window attention (Mistral v0.1: 4096 on every layer; Gemma-2: 4096 on every other
    #: layer; Phi-3-mini: 2047): a sliding layer keeps at most window - 1 + max_num_batched_tokens
    #: tokens of a request, plus one block (memory_model.md §1.4)
    sliding_window: PositiveInt | None = None
    #: how many of `layers` use the window (all of them when only `sliding_window` is given)
    sliding_layers: Annotated[int, msgspec.Meta(ge=0)] | None = None

    @property
    def window_layers(self) -> int:
        if self.sliding_window is None:
            return 0
        return self.layers if self.sliding_layers is None else self.sliding_layers
    #: CUDA-graph memory estimate at vLLM's default 51 piecewise + 35 full graphs (memory_model.md §3)
    cudagraph_gib: NonNegative


class EngineSpec(Strict, kw_only=True):
    #: VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS (on by default since v0.21.0, memory_model.md §1.3)
    estimate_cudagraphs: bool = True
    #: chunked prefill is the V1 default; off re-enables the mnbt >= max_model_len check (§1.8)
    chunked_prefill: bool = True
    #: --kv-cache-dtype: "auto" stores KV in the model's dtype; fp8 stores 1 byte an element,
    #: halving KV bytes per token (memory_model.md §1.4)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"

    @property
    def kv_fp8(self) -> bool:
        return self.kv_cache_dtype.startswith("fp8")


class Workload(Strict, kw_only=True):
    #: requests in flight at once, as production sends them (closed loop)
    concurrent_users: PositiveInt
    #: mean prompt length; prompts spread deterministically over 0.5x..1.5x of it
    prompt_tokens: PositiveInt
    output_tokens: PositiveInt
    #: requests in the load phase
    requests: PositiveInt
    #: more preemptions than this fraction of requests fails the load phase (F7)
    max_preemption_ratio: NonNegative = 0.1


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    gpu: GpuSpec
    cotenants: list[Cotenant]
    model: ModelSpec
    engine: EngineSpec
    current: ServingConfig
    workload: Workload
    actuators: ActuatorBounds
    #: where it was read from
    source: str

    @property
    def tensor_parallel_size(self) -> int:
        return self.gpu.count

    def cotenants_on(self, gpu: int) -> list[Cotenant]:
        return sorted((c for c in self.cotenants if c.gpu == gpu), key=lambda c: c.pid)
