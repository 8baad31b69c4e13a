"""Library functions behind the query commands: history, state, promotions, intents, show.

Each takes `as_of` (a position or an ISO-8601 time): what the system believed then.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from selfheal.eventstore.audit import events, row_json
from selfheal.eventstore.store import EventStore
from selfheal.projections import view_as_of
from selfheal.projections.rate_limit import backoff, next_allowed
from selfheal.schemas.config import RateLimitSettings


def _view(store: EventStore, as_of):
    return view_as_of(store, None if as_of is None else store.as_of(as_of))


def history(store: EventStore, *, as_of=None, deployment: str | None = None, node: str | None = None) -> list:
    runs = _view(store, as_of)["runs"]
    return [r for r in (runs.by_id[i] for i in runs.order)
            if deployment in (None, r.deployment) and node in (None, r.node)]


class DeploymentState(msgspec.Struct):
    deployment: str
    runs_in_window: int
    run_starts: list[datetime]
    consecutive_failures: int
    backoff_hours: float | None
    next_allowed_at: datetime | None
    open_runs: list[str]


def state(store: EventStore, limits: RateLimitSettings, now: datetime, *, as_of=None,
          node: str | None = None) -> list[DeploymentState]:
    """Rate-limit state per deployment; `now` only decides which runs are inside the window.
    `node`: only the deployments with a run that node recorded (a budget is the fleet's, whole)."""
    view = _view(store, as_of)
    budgets = view["rate_limit"].deployments
    runs = view["runs"].by_id.values()
    names = sorted(budgets) if node is None else sorted(set(budgets) & {r.deployment for r in runs if r.node == node})
    out = []
    for name in names:
        b = budgets[name]
        wait = backoff(b, limits)
        out.append(DeploymentState(
            deployment=name, runs_in_window=sum(1 for t in b.run_starts if t > now - timedelta(hours=limits.window_hours)),
            run_starts=list(b.run_starts), consecutive_failures=b.consecutive_failures,
            backoff_hours=None if wait is None else wait.total_seconds() / 3600,
            next_allowed_at=next_allowed(b, limits, now), open_runs=list(b.open_runs)))
    return out


def promotions(store: EventStore, *, as_of=None, waiting_only: bool = False) -> list:
    found = _view(store, as_of)["promotions"]
    return found.waiting() if waiting_only else list(found.by_id.values())


def intents(store: EventStore, *, as_of=None, status: str | None = None) -> list:
    found = _view(store, as_of)["intents"].by_id.values()
    return [i for i in found if status in (None, i.status)]


class ChainEvent(msgspec.Struct):
    position: int
    depth: int
    occurred_at: str
    type: str
    stream: str
    event_id: str
    causation_id: str | None
    data: dict


class RunChain(msgspec.Struct):
    run: object
    chain: list[ChainEvent]


def show(store: EventStore, run_id: str, *, as_of=None) -> RunChain:
    """A run and the causal chain from its incident to its outcome, each event at its depth."""
    view = _view(store, as_of)
    runs = view["runs"]
    matches = [r for r in runs.by_id if r == run_id or r.startswith(run_id)]
    if len(matches) != 1:
        raise LookupError(f"run {run_id!r}: " + ("no such run" if not matches else f"{len(matches)} runs match; give more of the id"))
    run = runs.by_id[matches[0]]
    depth: dict[str, int] = {}
    chain = []
    until = None if as_of is None else store.as_of(as_of)
    for row in events(store, correlation=run.correlation_id, as_of=until):
        level = depth.get(row.causation_id, -1) + 1 if row.causation_id else 0
        depth[row.event_id] = level
        body = msgspec.json.decode(row_json(row))
        chain.append(ChainEvent(position=row.position, depth=level, occurred_at=row.occurred_at, type=row.type,
                                stream=row.stream, event_id=row.event_id, causation_id=row.causation_id,
                                data=body["data"]))
    return RunChain(run=run, chain=chain)


def baseline(store: EventStore, *, as_of=None, deployment: str | None = None) -> dict[str, list]:
    """Each deployment's baseline versions, oldest first (the last is the current one)."""
    history = _view(store, as_of)["baselines"].history
    return {name: versions for name, versions in sorted(history.items()) if deployment in (None, name)}


def alerts(store: EventStore, *, as_of=None, deployment: str | None = None) -> list:
    found = _view(store, as_of)["alerts"]
    return [a for a in (found.by_id[i] for i in found.order) if deployment in (None, a.deployment)]
