"""The vLLM serving parameters selfheal is allowed to change, as one value type.

Field names are vLLM's engine-argument names, so a config maps 1:1 onto both
`vllm serve --flag` arguments and the YAML read by `vllm serve --config`.
"""
from __future__ import annotations

import msgspec

#: the parameters selfheal may change, in the order they are shown to people
TUNABLE = (
    "gpu_memory_utilization",
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "enforce_eager",
)
#: tunables a config may leave unset (None: vLLM's own default), after TUNABLE in every listing;
#: apart from TUNABLE, whose names every config holds a value for (a YAML writes each of them)
OPTIONAL_TUNABLE = ("kv_cache_memory_bytes",)
ALL_TUNABLE = TUNABLE + OPTIONAL_TUNABLE


class ServingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 8192
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    enforce_eager: bool = False
    #: vLLM's --kv-cache-memory-bytes: the KV cache's size per GPU, set outright. None (the
    #: default) lets vLLM size it from gpu_memory_utilization; set, utilization no longer
    #: sizes the cache (it still gates the start on free memory, memory_model.md §1.1, §1.3)
    kv_cache_memory_bytes: int | None = None

    def changed(self, **values) -> "ServingConfig":
        return msgspec.structs.replace(self, **values)

    def diff(self, other: "ServingConfig") -> dict[str, tuple[object, object]]:
        """Parameters whose value differs: name -> (self's value, other's value)."""
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in ALL_TUNABLE
            if getattr(self, name) != getattr(other, name)
        }

    def as_dict(self) -> dict[str, object]:
        """The tunables; an unset kv_cache_memory_bytes is left out (vLLM's own sizing)."""
        return {name: getattr(self, name) for name in ALL_TUNABLE if getattr(self, name) is not None}

    def cli_args(self) -> list[str]:
        """The `vllm serve` flags for this config, as an argument list."""
        args = [
            "--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}",
            "--max-model-len", str(self.max_model_len),
            "--max-num-seqs", str(self.max_num_seqs),
            "--max-num-batched-tokens", str(self.max_num_batched_tokens),
        ]
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.kv_cache_memory_bytes is not None:
            args += ["--kv-cache-memory-bytes", str(self.kv_cache_memory_bytes)]
        return args
