"""Escrow (mode `prod`): a person approves or rejects a promotion; unattended ones lapse.

These are commands at the edge, not handlers: they record a person's decision, or the
passing of time, with the clock of the one who acts. The commit that follows an approval
is a handler's (`handlers.baseline`), reacting to PromotionApproved.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from selfheal.eventstore.store import EventStore, Pending, derived_id, new_id
from selfheal.handlers.tournament import evidence_hash
from selfheal.projections import view_as_of
from selfheal.schemas.config import Settings
from selfheal.schemas.events import PromotionApproved, PromotionLapsed, PromotionRejected


class EscrowError(ValueError):
    """An approval or rejection that cannot be recorded, and why."""


def _waiting(store: EventStore, promotion_id: str):
    view = view_as_of(store)
    found = [p for pid, p in view["promotions"].by_id.items() if pid == promotion_id or pid.startswith(promotion_id)]
    if len(found) != 1:
        raise EscrowError(f"promotion {promotion_id!r}: " + ("no such promotion" if not found else
                                                              f"{len(found)} match; give more of the id"))
    promotion = found[0]
    if promotion.status != "waiting":
        raise EscrowError(f"promotion {promotion.promotion_id}: already {promotion.status}")
    return view, promotion


def _append(store: EventStore, promotion_id: str, event, now: datetime) -> None:
    store.append(f"promotion-{promotion_id}", [Pending(event=event, event_id=new_id(), occurred_at=now)])


def approve(store: EventStore, settings: Settings, promotion_id: str, by: str, now: datetime, note: str = "") -> PromotionApproved:
    """Approve the evidence as it stands; refused if it changed since it was proposed."""
    if not by.strip():
        raise EscrowError("--by: say who approves")
    view, promotion = _waiting(store, promotion_id)
    ttl = timedelta(hours=settings.approval.ttl_hours)
    if now - promotion.proposed_at > ttl:
        lapse(store, promotion.promotion_id, f"not approved within {settings.approval.ttl_hours:g} h", now)
        raise EscrowError(f"promotion {promotion.promotion_id}: waited more than {settings.approval.ttl_hours:g} h; "
                          "it has lapsed")
    run = view["runs"].by_id.get(promotion.run_id)
    current = view["baselines"].current(promotion.deployment)
    problems = []
    if run is None or evidence_hash(run) != promotion.evidence_hash:
        problems.append("the run's evidence changed since the promotion was proposed")
    if current is not None and current.config != promotion.previous:
        problems.append(f"the baseline is now v{current.version}, not the configuration the run started from")
    if problems:
        raise EscrowError(f"promotion {promotion.promotion_id}: refused: {'; '.join(problems)}")
    approved = PromotionApproved(promotion_id=promotion.promotion_id, by=by, evidence_hash=promotion.evidence_hash,
                                 expires_at=now + ttl, note=note)
    _append(store, promotion.promotion_id, approved, now)
    return approved


def reject(store: EventStore, promotion_id: str, by: str, now: datetime, note: str = "") -> PromotionRejected:
    if not by.strip():
        raise EscrowError("--by: say who rejects")
    _, promotion = _waiting(store, promotion_id)
    rejected = PromotionRejected(promotion_id=promotion.promotion_id, by=by, note=note)
    _append(store, promotion.promotion_id, rejected, now)
    return rejected


def lapse(store: EventStore, promotion_id: str, reason: str, now: datetime) -> None:
    event = PromotionLapsed(promotion_id=promotion_id, reason=reason)
    # one lapse per promotion, however many processes notice the time at once
    store.append(f"promotion-{promotion_id}", [Pending(event=event, event_id=derived_id(promotion_id, "lapsed"),
                                                       occurred_at=now)])


def lapse_expired(store: EventStore, settings: Settings, now: datetime, view=None) -> list[str]:
    """Record the lapse of every promotion that waited past the TTL; returns their ids.

    `view`: a caught-up view to read promotions from (a runner's), instead of folding the
    whole log again on every call."""
    ttl = timedelta(hours=settings.approval.ttl_hours)
    lapsed = []
    promotions = (view.catch_up() if view is not None else view_as_of(store))["promotions"]
    for promotion in list(promotions.by_id.values()):
        if promotion.status == "waiting" and promotion.requires_approval and now - promotion.proposed_at > ttl:
            reason = f"not approved within {settings.approval.ttl_hours:g} h"
        elif promotion.status == "approved" and promotion.expires_at is not None and now > promotion.expires_at:
            reason = "the approval expired before the commit ran"
        else:
            continue
        lapse(store, promotion.promotion_id, reason, now)
        lapsed.append(promotion.promotion_id)
    return lapsed
