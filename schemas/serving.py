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


class ServingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 8192
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    enforce_eager: bool = False

    def changed(self, **values) -> "ServingConfig":
        return msgspec.structs.replace(self, **values)

    def diff(self, other: "ServingConfig") -> dict[str, tuple[object, object]]:
        """Parameters whose value differs: name -> (self's value, other's value)."""
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in TUNABLE
            if getattr(self, name) != getattr(other, name)
        }

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in TUNABLE}

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
        return args
