"""Read models of the log: pure folds, rebuildable from scratch at any position."""
from __future__ import annotations

from collections.abc import Callable

from selfheal.eventstore.store import EventStore
from selfheal.projections import snapshots
from selfheal.projections.alerts import AlertsProjection
from selfheal.projections.base import Projection, View, catch_up, rebuild as rebuild_one
from selfheal.projections.baselines import BaselinesProjection
from selfheal.projections.event_counts import EventCountsProjection
from selfheal.projections.intents import IntentsProjection
from selfheal.projections.predictions import PredictionsProjection
from selfheal.projections.promotions import PromotionsProjection
from selfheal.projections.rate_limit import RateLimitProjection
from selfheal.projections.rulesets import RuleSetsProjection
from selfheal.projections.runs import RunsProjection


def registered() -> list[Projection]:
    """Every projection selfheal maintains (handlers read them; `rebuild` rebuilds them)."""
    return [EventCountsProjection(), BaselinesProjection(), IntentsProjection(), RateLimitProjection(),
            RunsProjection(), PromotionsProjection(), AlertsProjection(), RuleSetsProjection(),
            PredictionsProjection()]


def rebuild(store: EventStore, *, as_of: int | None = None,
            progress: Callable[[int], None] | None = None) -> dict:
    """Rebuild every registered projection from scratch in one pass over the log."""
    view = View(store, registered()).catch_up(until=as_of, progress=progress)
    return {"position": view.position, "projections": dict(view.states)}


def view_as_of(store: EventStore, as_of: int | None = None) -> View:
    """Every projection as of a position (default: now, from the newest valid snapshot)."""
    view = View(store, registered())
    if as_of is None:
        snapshots.restore(view)
    return view.catch_up(until=as_of)


__all__ = ["Projection", "View", "catch_up", "rebuild", "rebuild_one", "registered", "view_as_of"]
