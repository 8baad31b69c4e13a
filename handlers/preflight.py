"""Pre-flight: will the candidate fit the GPU right now? Read the inventory, record it, decide.

vLLM asks for `gpu_memory_utilization x total` on every device at startup and refuses to
start when less is free; pre-flight rejects such a candidate before a canary is spent on
it, keeping `margin` back for vLLM's own CUDA context and for jitter. The read is an
activity (CandidateProposed is its request); its snapshot goes into the event with the
decision, a pure function of it (`check`), so replay answers from the recorded snapshot.

An inventory that cannot be read is a rejection marked `inventory_unavailable`: the tournament
ends the run on it (no blind runs, issue 15.6). A deployment removed from the config while its
run was open is not that case: the tournament closes that run too, with its own reason.
"""
from __future__ import annotations

from selfheal.eventstore.store import Recorded
from selfheal.handlers.ports import InventoryUnavailable
from selfheal.handlers.runtime import Activity, Emitted, Progress
from selfheal.projections.base import View
from selfheal.schemas.events import CandidateProposed, PreflightPassed, PreflightRejected

GIB = 1 << 30


def check(snapshot, utilization: float, margin_bytes: int) -> tuple[bool, int, int, str]:
    """(fits, required bytes, free bytes of the tightest device, reason)."""
    worst = None
    for device in snapshot:
        required = int(utilization * device.total_bytes)
        slack = device.free_bytes - margin_bytes - required
        if worst is None or slack < worst[0]:
            worst = (slack, required, device)
    slack, required, device = worst
    if slack >= 0:
        return True, required, device.free_bytes, "fits"
    return False, required, device.free_bytes, (
        f"GPU {device.index} ({device.name}): gpu_memory_utilization {utilization:g} asks for "
        f"{required / GIB:.2f} GiB, but only {device.free_bytes / GIB:.2f} GiB is free and "
        f"{margin_bytes / GIB:.2f} GiB is kept as margin")


class Preflight(Activity):
    """Reads the GPU inventory and rejects a candidate that cannot fit now; the snapshot goes into the event."""

    name = "preflight"
    port = "inventory"
    replayable = True
    subscribes_to = (CandidateProposed,)
    emits = (PreflightPassed, PreflightRejected)

    def __init__(self, deployments: dict, margin_gib: float):
        self.deployments = deployments
        self.margin = int(margin_gib * GIB)

    def perform(self, event: Recorded, view: View, progress: Progress) -> Emitted:
        e = event.event
        stream = f"run-{e.run_id}"
        edges = self.deployments.get(e.deployment)
        if edges is None:  # removed from the config while its run was open: the tournament closes it
            rejected = PreflightRejected(run_id=e.run_id, candidate_id=e.candidate_id,
                                         reason=f"deployment {e.deployment!r} is no longer configured",
                                         required_bytes=0, free_bytes=0, margin_bytes=self.margin, snapshot=[])
            return [(stream, event.follow(rejected, self.name))]
        try:
            snapshot = edges.inventory.snapshot()
            if not snapshot:  # the port promises devices or InventoryUnavailable; hold an adapter to it
                raise InventoryUnavailable("the inventory read no device", source="preflight")
        except InventoryUnavailable as exc:
            rejected = PreflightRejected(run_id=e.run_id, candidate_id=e.candidate_id, reason=str(exc),
                                         required_bytes=0, free_bytes=0, margin_bytes=self.margin, snapshot=[],
                                         inventory_unavailable=True)
            return [(stream, event.follow(rejected, self.name))]
        fits, required, free, reason = check(snapshot, e.config.gpu_memory_utilization, self.margin)
        cls = PreflightPassed if fits else PreflightRejected
        extra = {} if fits else {"reason": reason}
        out = cls(run_id=e.run_id, candidate_id=e.candidate_id, required_bytes=required, free_bytes=free,
                  margin_bytes=self.margin, snapshot=snapshot, **extra)
        return [(stream, event.follow(out, self.name))]
