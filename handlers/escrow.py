"""Escrow (mode `prod`): a person approves or rejects a promotion; unattended ones lapse.

These are commands at the edge, not handlers: they record a person's decision, or the
passing of time, with the clock of the one who acts. The commit that follows an approval
is a handler's (`handlers.baseline`), reacting to PromotionApproved.

Decisions on one promotion are serialised on its stream (`promotion-ID`): each is made on the
promotion as a view of the log shows it, and appended with the version the stream had in that
view. Of two decisions made at once (approve and reject from two terminals, an approval and
the lapse a `run` notices) only the first append lands; the other finds the stream moved, is
made again on what the log holds now, and is refused: "already rejected".
"""
from __future__ import annotations

from datetime import datetime, timedelta

from selfheal.eventstore.errors import ConcurrencyError
from selfheal.eventstore.store import EventStore, Pending, derived_id, new_id
from selfheal.handlers.tournament import evidence_hash
from selfheal.projections import view_as_of
from selfheal.schemas.config import Settings
from selfheal.schemas.events import PromotionApproved, PromotionLapsed, PromotionRejected


class EscrowError(ValueError):
    """An approval or rejection that cannot be recorded, and why."""


#: how often a decision is made again when its promotion's stream moved under it
TRIES = 5


def _found(view, promotion_id: str):
    found = [p for pid, p in view["promotions"].by_id.items() if pid == promotion_id or pid.startswith(promotion_id)]
    if len(found) != 1:
        raise EscrowError(f"promotion {promotion_id!r}: " + ("no such promotion" if not found else
                                                              f"{len(found)} match; give more of the id"))
    return found[0]


def _version_at(store: EventStore, stream: str, position: int) -> int:
    """The version `stream` had at `position`: what a view folded up to there has seen of it."""
    return sum(1 for row in store.recorder.read_stream(stream) if row.position <= position)


def _decided(store: EventStore, promotion_id: str, decide, now: datetime, settles=("waiting",)):
    """Record the decision `decide(view, promotion)` makes on a promotion whose status is one of
    `settles`, serialised on the promotion's stream; returns the event recorded (None: `decide`
    decided nothing).

    `decide` returns None, or (event, event id, an EscrowError to raise once it is recorded).
    A decision whose stream moved since its view (another decision landed) is made again on
    the new state, which then refuses it with what settled the promotion."""
    for _ in range(TRIES):
        view = view_as_of(store)
        promotion = _found(view, promotion_id)
        if promotion.status not in settles:
            raise EscrowError(f"promotion {promotion.promotion_id}: already {promotion.status}")
        stream = f"promotion-{promotion.promotion_id}"
        expected = _version_at(store, stream, view.position)
        decision = decide(view, promotion)
        if decision is None:
            return None
        event, event_id, then_raise = decision
        try:
            # in the incident's chain, caused by the proposal: `events --correlation` and `show`
            # find who approved (or what lapsed) beside the run that proposed it
            store.append(stream, [Pending(event=event, event_id=event_id, occurred_at=now,
                                          correlation_id=promotion.correlation_id,
                                          causation_id=promotion.proposed_event_id or None)],
                         expected_version=expected)
        except ConcurrencyError:
            continue
        if then_raise is not None:
            raise then_raise
        return event
    raise EscrowError(f"promotion {promotion_id}: other decisions kept landing on it while this one was made; "
                      "run the command again")


def _lapse(promotion_id: str, reason: str) -> tuple:
    # one lapse per promotion (a derived id), however many processes notice the time at once
    return PromotionLapsed(promotion_id=promotion_id, reason=reason), derived_id(promotion_id, "lapsed")


def _not_approved(ttl: timedelta) -> str:
    return f"not approved within {ttl.total_seconds() / 3600:g} h"


def _lapse_reason(promotion, ttl: timedelta, now: datetime) -> str | None:
    if promotion.status == "waiting" and promotion.requires_approval and now - promotion.proposed_at > ttl:
        return _not_approved(ttl)
    if promotion.status == "approved" and promotion.expires_at is not None and now > promotion.expires_at:
        return "the approval expired before the commit ran"
    return None


def approve(store: EventStore, settings: Settings, promotion_id: str, by: str, now: datetime, note: str = "") -> PromotionApproved:
    """Approve the evidence as it stands; refused if it changed since it was proposed."""
    if not by.strip():
        raise EscrowError("--by: say who approves")
    ttl = timedelta(hours=settings.approval.ttl_hours)

    def decide(view, promotion):
        if now - promotion.proposed_at > ttl:
            return (*_lapse(promotion.promotion_id, _not_approved(ttl)),
                    EscrowError(f"promotion {promotion.promotion_id}: waited more than "
                                f"{settings.approval.ttl_hours:g} h; it has lapsed"))
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
        return approved, new_id(), None

    return _decided(store, promotion_id, decide, now)


def reject(store: EventStore, promotion_id: str, by: str, now: datetime, note: str = "") -> PromotionRejected:
    if not by.strip():
        raise EscrowError("--by: say who rejects")
    return _decided(store, promotion_id, lambda view, promotion: (
        PromotionRejected(promotion_id=promotion.promotion_id, by=by, note=note), new_id(), None), now)


def lapse_expired(store: EventStore, settings: Settings, now: datetime, view=None) -> list[str]:
    """Record the lapse of every promotion that waited past the TTL; returns their ids.

    `view`: a caught-up view to find them in (a runner's), instead of folding the whole log
    again on every call. Each lapse is decided again on the log as it stands, serialised with
    the approvals and rejections recorded meanwhile: one settled since is not lapsed."""
    ttl = timedelta(hours=settings.approval.ttl_hours)
    lapsed = []
    promotions = (view.catch_up() if view is not None else view_as_of(store))["promotions"]
    due = [p.promotion_id for p in list(promotions.by_id.values()) if _lapse_reason(p, ttl, now)]
    for promotion_id in due:
        def decide(_, promotion):
            reason = _lapse_reason(promotion, ttl, now)
            return (*_lapse(promotion.promotion_id, reason), None) if reason else None
        try:
            if _decided(store, promotion_id, decide, now, settles=("waiting", "approved")) is not None:
                lapsed.append(promotion_id)
        except EscrowError:
            continue  # settled otherwise meanwhile (rejected, committing): nothing lapses
    return lapsed
