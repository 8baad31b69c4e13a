"""Promotions: winners waiting for a commit or an approval, and how each was settled."""
from __future__ import annotations

from datetime import datetime

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection
from selfheal.schemas.serving import ServingConfig


class PromotionSummary(msgspec.Struct, gc=False):  # a read model holds no cycles: not tracked
    promotion_id: str
    run_id: str
    deployment: str
    config: ServingConfig
    previous: ServingConfig
    fitness: float
    evidence_hash: str
    simulated: bool
    requires_approval: bool
    proposed_at: datetime
    status: str = "waiting"  # waiting | approved | rejected | lapsed | not committed | committing
    by: str | None = None
    note: str = ""
    expires_at: datetime | None = None
    commit_id: str | None = None
    #: the PromotionProposed event and its correlation: a decision on the promotion (an approval
    #: typed at a terminal, a lapse) joins the incident's chain through them
    proposed_event_id: str = ""
    correlation_id: str | None = None


class Promotions(msgspec.Struct):
    by_id: dict[str, PromotionSummary] = {}

    def waiting(self) -> list[PromotionSummary]:
        return [p for p in self.by_id.values() if p.status == "waiting"]


#: the status each event settles a promotion in
_STATUS = {"PromotionApproved": "approved", "PromotionRejected": "rejected", "PromotionLapsed": "lapsed",
           "PromotionNotCommitted": "not committed", "BaselineCommitStarted": "committing"}
#: what each status may become. A rejected, lapsed or not committed promotion is settled for
#: good, and so is an approved one but for its commit (or its lapse before the commit ran): a
#: decision the log holds after the one that settled it (approve and reject recorded at once,
#: before escrow serialised them on the promotion's stream) changes nothing
_NEXT = {"waiting": frozenset(_STATUS.values()),
         "approved": frozenset({"lapsed", "not committed", "committing"}),
         "committing": frozenset({"not committed"})}


class PromotionsProjection(Projection[Promotions]):
    name = "promotions"
    types = frozenset({"PromotionProposed", "PromotionApproved", "PromotionRejected", "PromotionLapsed",
                       "PromotionNotCommitted", "BaselineCommitStarted"})

    def initial(self) -> Promotions:
        return Promotions()

    def apply(self, state: Promotions, event: Recorded) -> Promotions:
        e = event.event
        shared = self.shared
        if event.type == "PromotionProposed":
            state.by_id[e.promotion_id] = PromotionSummary(
                promotion_id=e.promotion_id, run_id=e.run_id, deployment=shared[e.deployment], config=shared[e.config],
                previous=shared[e.previous], fitness=e.fitness, evidence_hash=e.evidence_hash, simulated=e.simulated,
                requires_approval=e.requires_approval, proposed_at=event.occurred,
                proposed_event_id=event.event_id, correlation_id=event.correlation_id or event.event_id)
            return state
        promotion = state.by_id.get(getattr(e, "promotion_id", None) or "")
        if promotion is None or _STATUS[event.type] not in _NEXT.get(promotion.status, ()):
            return state
        if event.type == "PromotionApproved":
            promotion.status, promotion.by, promotion.note = "approved", shared[e.by], shared[e.note]
            promotion.expires_at = e.expires_at
        elif event.type == "PromotionRejected":
            promotion.status, promotion.by, promotion.note = "rejected", shared[e.by], shared[e.note]
        elif event.type == "PromotionLapsed":
            promotion.status, promotion.note = "lapsed", shared[e.reason]
        elif event.type == "PromotionNotCommitted":
            promotion.status, promotion.note = "not committed", shared[e.reason]
        else:
            promotion.status, promotion.commit_id = "committing", e.commit_id
        return state
