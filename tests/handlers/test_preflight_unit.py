"""Pre-flight on its own: a CandidateProposed in, PreflightPassed or PreflightRejected out,
with the inventory's snapshot in the event."""
from __future__ import annotations

import dataclasses

from selfheal.edges.deployments import from_scenario
from selfheal.handlers.ports import InventoryUnavailable
from selfheal.handlers.preflight import Preflight
from selfheal.schemas.events import CandidateProposed, GpuProcess, GpuSnapshot, RunStarted
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, deployment, settings

GIB = 1 << 30
MARGIN_GIB = 0.5


def gpu(index: int = 0, name: str = "NVIDIA GeForce RTX 3060", total_gib: float = 12.0,
        free_gib: float = 9.0) -> GpuSnapshot:
    total, free = int(total_gib * GIB), int(free_gib * GIB)
    return GpuSnapshot(index=index, name=name, total_bytes=total, used_bytes=total - free, free_bytes=free,
                       processes=[GpuProcess(pid=2211, name="faster-whisper", used_bytes=total - free)],
                       source="test")


class Inventory:
    """A fake GpuInventory: the given devices, or InventoryUnavailable."""

    def __init__(self, devices: list[GpuSnapshot] | None = None, unavailable: str | None = None):
        self.devices, self.unavailable, self.reads = devices, unavailable, 0

    def snapshot(self) -> list[GpuSnapshot]:
        self.reads += 1
        if self.unavailable:
            raise InventoryUnavailable(self.unavailable)
        return list(self.devices)


def candidate(utilization: float) -> list[tuple]:
    start = RunStarted(run_id="r1", intent_id="i1", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    config = PRODUCTION.changed(gpu_memory_utilization=utilization)
    proposed = CandidateProposed(run_id="r1", candidate_id="c1", deployment=DEPLOYMENT, config=config,
                                 changes={"gpu_memory_utilization": [0.8, utilization]}, origin="seed", rank=0)
    return [("run-r1", start), ("run-r1", proposed)]


def preflight(inventory: Inventory) -> Preflight:
    return Preflight(deployment(inventory=inventory), MARGIN_GIB)


def test_a_candidate_that_fits_passes_with_the_snapshot():
    inventory = Inventory([gpu(free_gib=9.0)])
    then = Given(*candidate(0.6)).when(preflight(inventory))
    assert then.types == ["PreflightPassed"] and then.streams == ["run-r1"]
    passed = then.events[0]
    assert (passed.run_id, passed.candidate_id) == ("r1", "c1")
    assert passed.required_bytes == int(0.6 * 12 * GIB)  # 7.2 GiB of 12
    assert passed.free_bytes == 9 * GIB and passed.margin_bytes == GIB // 2
    assert passed.snapshot == inventory.devices and inventory.reads == 1
    then.caused(T0)


def test_a_candidate_that_does_not_fit_names_the_device_and_the_margin():
    inventory = Inventory([gpu(free_gib=9.0)])
    then = Given(*candidate(0.75)).when(preflight(inventory))  # 9 GiB asked, 9 free, 0.5 kept back
    assert then.types == ["PreflightRejected"] and then.streams == ["run-r1"]
    rejected = then.events[0]
    assert rejected.reason == ("GPU 0 (NVIDIA GeForce RTX 3060): gpu_memory_utilization 0.75 asks for 9.00 GiB, "
                               "but only 9.00 GiB is free and 0.50 GiB is kept as margin")
    assert rejected.required_bytes == int(0.75 * 12 * GIB) and rejected.free_bytes == 9 * GIB
    assert rejected.margin_bytes == GIB // 2 and rejected.snapshot == inventory.devices
    then.caused(T0)


def test_the_margin_is_exactly_enough():
    # 0.85 of 10 GiB asks for 8.5, 9 are free: nothing left after the margin, and it still fits
    inventory = Inventory([gpu(total_gib=10.0, free_gib=9.0)])
    assert Given(*candidate(0.85)).when(preflight(inventory)).types == ["PreflightPassed"]
    assert Given(*candidate(0.86)).when(preflight(inventory)).types == ["PreflightRejected"]


def test_the_tightest_device_decides_and_is_named():
    inventory = Inventory([gpu(0, "GPU-A", free_gib=11.0), gpu(1, "GPU-B", free_gib=6.0)])
    then = Given(*candidate(0.6)).when(preflight(inventory))
    rejected = then.one("PreflightRejected")
    assert rejected.reason.startswith("GPU 1 (GPU-B): ") and rejected.free_bytes == 6 * GIB
    assert [d.index for d in rejected.snapshot] == [0, 1]


def test_an_unreadable_inventory_is_a_rejection_with_the_reason():
    inventory = Inventory(unavailable="NVML Shared Library Not Found")
    then = Given(*candidate(0.6)).when(preflight(inventory))
    # the run ends with it (tests/handlers/test_blind_preflight.py)
    assert then.types[0] == "PreflightRejected" and then.streams[0] == "run-r1"
    rejected = then.events[0]
    assert rejected.inventory_unavailable
    assert "GPU inventory unavailable (nvml): NVML Shared Library Not Found" in rejected.reason
    assert "no canary is started" in rejected.reason
    assert rejected.snapshot == [] and rejected.required_bytes == 0 and rejected.free_bytes == 0
    assert rejected.margin_bytes == GIB // 2
    then.caused(T0)


def test_an_inventory_with_no_device_is_a_rejection_not_a_crash():
    then = Given(*candidate(0.6)).when(preflight(Inventory([])))
    assert then.types[0] == "PreflightRejected" and then.one("PreflightRejected").snapshot == []
    assert "read no device" in then.one("PreflightRejected").reason


def test_the_workstation_scenarios_own_inventory_and_a_swapped_one():
    name = "workstation-12gb-speech"
    configured = settings(name, f'scenario = "{name}"')
    edges = from_scenario(name, configured.deployments[name], MARGIN_GIB)
    proposed = CandidateProposed(run_id="r1", candidate_id="c1", deployment=name,
                                 config=edges.current.changed(gpu_memory_utilization=0.6),
                                 changes={"gpu_memory_utilization": [0.9, 0.6]}, origin="seed", rank=0)
    given = Given(("run-r1", proposed))
    # the simulated RTX 3060 with its speech co-tenants: 7 GiB asked, 8.9 free
    passed = given.when(Preflight({name: edges}, MARGIN_GIB)).one("PreflightPassed")
    assert [(d.name, d.source) for d in passed.snapshot] == [("NVIDIA GeForce RTX 3060", "simulated")]
    # the same deployment while a co-tenant has grown: the port is swapped, nothing else
    crowded = dataclasses.replace(edges, inventory=Inventory([gpu(total_gib=11.66, free_gib=6.0)]))
    rejected = given.when(Preflight({name: crowded}, MARGIN_GIB)).one("PreflightRejected")
    assert "only 6.00 GiB is free" in rejected.reason
