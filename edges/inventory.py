"""GPU inventory adapters: what pre-flight reads before a canary starts (MISSION §4).

`GpuInventory.snapshot()` (the port, in handlers.ports) returns one `GpuSnapshot` per device: total, used and free bytes and
the processes holding memory. The NVML reader (pynvml) implements the same Protocol; this
module also holds `ScenarioInventory`, which answers from a simulator scenario. An inventory
that cannot read the devices raises `InventoryUnavailable`: it never reports an empty or
made-up GPU, so pre-flight can never pass silently.

The snapshot types are the ones the event log records (schemas.events), so a snapshot goes
into PreflightPassed / PreflightRejected as it is.
"""
from __future__ import annotations

from selfheal.schemas.events import GpuProcess, GpuSnapshot

GIB = 1 << 30


class ScenarioInventory:
    """The devices of a simulator scenario as NVML would show them before vLLM starts.

    Used memory is the co-tenants' (their own CUDA contexts included); nothing else runs, so
    vLLM's own context (0.45 GiB, memory_model.md §3) is not there yet: pre-flight's margin
    has to cover it. Totals are as vLLM reports them (the scenario's `total_gib`), so that
    `gpu_memory_utilization × total` in pre-flight is the number vLLM will ask for.
    """

    source = "simulated"

    def __init__(self, scenario):
        self.scenario = scenario

    def snapshot(self) -> list[GpuSnapshot]:
        gpu = self.scenario.gpu
        total = round(gpu.total_gib * GIB)
        out = []
        for index in range(gpu.count):
            procs = [GpuProcess(pid=c.pid, name=c.name, used_bytes=round(c.used_gib * GIB))
                     for c in self.scenario.cotenants_on(index)]
            used = sum(p.used_bytes for p in procs)
            out.append(GpuSnapshot(index=index, name=gpu.name, total_bytes=total, used_bytes=used,
                                   free_bytes=max(0, total - used), processes=procs, source=self.source))
        return out


__all__ = ["ScenarioInventory"]
