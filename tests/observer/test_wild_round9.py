"""Issue 14, blind round 9: the wording families its misses pointed at (rules appended to
20_oom.toml, 10_memory.toml and 35_source_checks.toml), on the real excerpts that found them and
on the look-alikes each family must leave alone. A family member must also leave vLLM's and
PyTorch's own wordings to the rules that read them whole: one finding per line, theirs."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose

WILD = Path(__file__).resolve().parent / "samples" / "wild"

#: the excerpts of the round that each family now reads, and the rule that must read it
ROUND9 = {
    "1759-vllm-metal-": "vllm_metal.paged_kv_budget",
    "1765-dsv4-": "torch.allocator_oom_warning",
    "1768-v08x-": "torch.cuda_oom_retold",
    "1770-strix-halo-": "vllm.startup_free_memory_family",
    "1771-ascend-": "torch.device_oom_bare",
    "1772-llm-scaler-": "torch.device_oom_quoted",
}


def _excerpt(prefix: str) -> tuple[str, dict]:
    (labels,) = WILD.glob(f"*/{prefix}*.toml")
    return labels.with_suffix(".log").read_text(encoding="utf-8"), tomllib.loads(labels.read_text(encoding="utf-8"))


@pytest.mark.parametrize("prefix", sorted(ROUND9))
def test_each_family_reads_the_excerpt_that_found_it(prefix):
    log, labels = _excerpt(prefix)
    f = diagnose(log).primary
    assert f is not None and (f.rule, f.kind) == (ROUND9[prefix], labels["kind"])
    assert {k: f.numbers.get(k) for k in labels["numbers"]} == pytest.approx(labels["numbers"], rel=0.01)
    if not labels["direction"]:  # no tunable setting helps, or none is known: told, never tuned
        assert f.fix == {}


def test_a_retyped_oom_gives_its_total_and_free_memory_too():
    log, labels = _excerpt("1760-club3090-")
    f = diagnose(log).primary
    assert f.rule == "torch.cuda_oom_retold"
    assert f.numbers == pytest.approx(labels["numbers"])


# what each family's words look like where nothing failed, or where someone only talks about it
SILENT = [
    "With Mistral as well on Ubuntu, I'm getting the CUDA out of memory error, and playing with "
    "`--gpu-memory-utilization` doesn't seem to make a difference.",
    "INFO 04-28 20:50:23 model_runner.py:795] CUDA graphs can take additional 1~3 GiB memory per GPU. If you are "
    "running out of memory, consider decreasing `gpu_memory_utilization` or enforcing eager mode.",
    "How to avoid `CUDA out of memory` when serving a 70B model on two cards?",
    "The NPU out of memory handling was reworked in this release.",
    "(Worker pid=29271) INFO 08-19 18:00:26 [gpu_worker.py:857] Free memory on device (78.66/79.18 GiB) on startup. "
    "Desired GPU memory utilization is (0.9, 71.26 GiB). Actual usage is 15.31 GiB for weight",
    "INFO vllm_metal: Paged attention: metal_limit=26.80GB, fraction=0.9, kv_budget=3.20GB, num_blocks=1250",
    "The MPS backend out of memory handling changed in torch 2.1.",
    "RuntimeError: CUDA out of memory errors are retried by the caller",
]


@pytest.mark.parametrize("log", SILENT)
def test_look_alikes_stay_silent(log):
    assert diagnose(log).findings == []


# the whole wordings the older rules read: the families add no second finding beside theirs
OWN = [
    ("ValueError: Free memory on device cuda:0 (8.0/64.0 GiB) on startup is less than desired\nGPU memory "
     "utilization (0.9, 57.6 GiB). Decrease GPU memory utilization or\nreduce GPU memory used by other processes.",
     "vllm.startup_free_memory"),
    ("ValueError: Available memory on node 0 (8.2/9.71 GiB) on startup is less than desired CPU memory utilization "
     "(1.0, 9.71 GiB).", "vllm.cpu_startup_free_memory"),
    ("RuntimeError: NPU out of memory. Tried to allocate 88.00 MiB (NPU 0; 60.96 GiB total capacity; 4.24 GiB already "
     "allocated; 4.24 GiB current active; 7.47 MiB free; 4.37 GiB reserved in total by PyTorch)", "torch.cuda_oom"),
    ("torch.OutOfMemoryError: HIP out of memory. Tried to allocate 4.70 GiB. GPU 0 has a total capacty of 63.98 GiB\n"
     "of which 3.06 GiB is free.", "torch.cuda_oom"),
    ("RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests. Please try lowering "
     "`max_num_seqs` or `gpu_memory_utilization` when initializing the engine.", "vllm.warmup_oom"),
]


@pytest.mark.parametrize("log, rule", OWN)
def test_the_families_leave_the_whole_wordings_to_their_rules(log, rule):
    assert [f.rule for f in diagnose(log).findings] == [rule]


def test_the_allocators_warning_is_told_never_tuned():
    """PyTorch's caching allocator logs it before freeing its cache and retrying: a retry that
    succeeded leaves it in a log that goes on serving, so it never starts a healing run."""
    from selfheal.schemas.serving import ServingConfig
    current = ServingConfig(gpu_memory_utilization=0.9, max_model_len=8192, max_num_seqs=16,
                            max_num_batched_tokens=2048)
    warning = ("[W CUDACachingAllocator.cpp:1050] memory allocation failed with OOM on device 0 while trying to "
               "allocate 2147483648 bytes (free: 513736704, total: 85095874560)\n")
    f = diagnose(warning, current=current).primary
    assert (f.rule, f.action, f.fix) == ("torch.allocator_oom_warning", "alert", {})
