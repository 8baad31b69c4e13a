"""Pre-flight: will the candidate fit the GPU right now? Read the inventory, record it, decide.

vLLM asks for `gpu_memory_utilization x total` on every device at startup and refuses to
start when less is free; pre-flight rejects such a candidate before a canary is spent on
it, keeping `margin` back for vLLM's own CUDA context and for jitter. The read is an
activity (CandidateProposed is its request); its snapshot goes into the event with the
decision, a pure function of it (`check`), so replay answers from the recorded snapshot.

No blind runs (issue 15.6). An inventory that cannot be read (no NVML, no driver) would refuse
every candidate of the run for the same reason, each one a proposal, a read and a rejection
spent on nothing. So the first such rejection ends the run at once: the escalation carries the
reason, and the run finishes marked `inventory_unavailable`, which the rate limit counts
neither as a run nor as a failure (projections/rate_limit.py): nothing was tried, so nothing
about the deployment's configuration was learnt, and the person who installs NVML may heal at
once. The ending is recorded here, beside the reading that decides it, as the rejection is:
`end_blind` is a pure function of the rejection and the run, so replay (which reads the recorded
snapshot, or none) ends it the same way. A deployment removed from the config while its run
was open is not this case: the tournament closes that run.
"""
from __future__ import annotations

from selfheal.eventstore.store import Recorded
from selfheal.handlers.ports import InventoryUnavailable
from selfheal.handlers.runtime import Activity, Emitted, Progress
from selfheal.projections.base import View
from selfheal.projections.intents import retry_hint
from selfheal.projections.runs import RunSummary
from selfheal.schemas.events import (
    CandidateEvidence, CandidateProposed, EscalationRaised, IntentArchived, PreflightPassed, PreflightRejected,
    RunFinished,
)

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


def end_blind(event: Recorded, run: RunSummary | None, rejected: PreflightRejected, view: View) -> list:
    """The run's end when its inventory cannot be read: escalated with the reason, finished
    without counting against the rate limit, its intent archived. Nothing when the run is
    unknown or already over (a repeat of the request after a crash)."""
    if run is None or run.status != "running":
        return []
    proposed = event.event
    tried = [CandidateEvidence(candidate_id=c.candidate_id, config=c.config, outcome=c.outcome,
                               failure_kind=c.canary.failure_kind if c.canary else None, fitness=c.fitness)
             for c in run.candidates if c.candidate_id != proposed.candidate_id]
    tried.append(CandidateEvidence(candidate_id=proposed.candidate_id, config=proposed.config,
                                   outcome="rejected in pre-flight"))
    reason = (f"pre-flight cannot read the GPU inventory, so no candidate can be checked; the run ends "
              f"without trying the others (not counted by the rate limit): {rejected.reason}")
    stream, intent_stream = f"run-{run.run_id}", f"intent-{run.intent_id}"
    intent = view["intents"].by_id.get(run.intent_id)
    retry = retry_hint(run.intent_id, intent.dedupe_until if intent else None)
    escalation = EscalationRaised(run_id=run.run_id, intent_id=run.intent_id, deployment=run.deployment,
                                  reason=reason, candidates=tried, retry=f"once the inventory reads: {retry}")
    finished = RunFinished(run_id=run.run_id, deployment=run.deployment, outcome="escalated", succeeded=False,
                           canaries=run.canaries, inventory_unavailable=True)
    archived = IntentArchived(intent_id=run.intent_id, deployment=run.deployment, outcome="escalated",
                              run_id=run.run_id)
    return [(stream, event.follow(escalation, "escalation")), (stream, event.follow(finished, "finished")),
            (intent_stream, event.follow(archived, "archived"))]


class Preflight(Activity):
    """Reads the GPU inventory and rejects a candidate that cannot fit now (the snapshot goes into the event); an unreadable inventory ends the run."""

    name = "preflight"
    port = "inventory"
    replayable = True
    subscribes_to = (CandidateProposed,)
    emits = (PreflightPassed, PreflightRejected, EscalationRaised, RunFinished, IntentArchived)

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
            return [(stream, event.follow(rejected, self.name)),
                    *end_blind(event, view["runs"].by_id.get(e.run_id), rejected, view)]
        fits, required, free, reason = check(snapshot, e.config.gpu_memory_utilization, self.margin)
        cls = PreflightPassed if fits else PreflightRejected
        extra = {} if fits else {"reason": reason}
        out = cls(run_id=e.run_id, candidate_id=e.candidate_id, required_bytes=required, free_bytes=free,
                  margin_bytes=self.margin, snapshot=snapshot, **extra)
        return [(stream, event.follow(out, self.name))]
