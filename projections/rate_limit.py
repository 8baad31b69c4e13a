"""RateLimitState: per deployment, the runs that count against the budget.

Everything here is a function of event times, never the wall clock: the earliest time the
next run is allowed follows from the runs already started and the failures already seen.

Log order is the truth of what came first; a clock can jump. So a time recorded before an
event but dated after it (a run started while the clock said 2031, then the clock set right)
is counted as that event's time: the latest time it can really have happened, so the budget
is never overspent, and a jump costs one cooldown from the first sane event, not years. The
fold pins such times at each event of the deployment (RunRequested included: the gate's
first record after the jump), and a decision reads them the same way up to its own time.

A run that ended because pre-flight could not read the GPU inventory (RunFinished
`inventory_unavailable`, handlers/preflight.py) counts for nothing: not as a failure (the
backoff is for configurations that failed, and none was tried) and not as a run (its start
leaves the window and the cooldown): it touched neither the GPU nor production, and the person
who fixes the driver or installs NVML should not wait hours to heal.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from selfheal.eventstore.recorder import utc_iso
from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection
from selfheal.schemas.config import RateLimitSettings


class DeploymentBudget(msgspec.Struct):
    run_starts: list[datetime] = []
    consecutive_failures: int = 0
    last_failure_at: datetime | None = None
    open_runs: list[str] = []


class RateLimitState(msgspec.Struct):
    deployments: dict[str, DeploymentBudget] = {}

    def budget(self, deployment: str) -> DeploymentBudget:
        found = self.deployments.get(deployment)
        return DeploymentBudget() if found is None else found


class RateLimitProjection(Projection[RateLimitState]):
    name = "rate_limit"
    types = frozenset({"RunRequested", "RunStarted", "RunFinished"})

    def initial(self) -> RateLimitState:
        return RateLimitState()

    def apply(self, state: RateLimitState, event: Recorded) -> RateLimitState:
        # in place: a copied budget per run made the fold quadratic in the runs of a deployment
        e = event.event
        budget = state.deployments.get(e.deployment)
        if event.type == "RunRequested":
            if budget is not None:
                _pin(budget, event.occurred)
            return state
        if budget is None:
            budget = state.deployments[e.deployment] = DeploymentBudget()
        _pin(budget, event.occurred)
        if event.type == "RunStarted":
            budget.run_starts.append(event.occurred)
            budget.open_runs.append(e.run_id)
        elif e.inventory_unavailable:
            _forget_start(budget, e.run_id)
        else:
            if e.succeeded:
                budget.consecutive_failures = 0
            else:
                budget.consecutive_failures += 1
                budget.last_failure_at = event.occurred
            budget.open_runs[:] = [r for r in budget.open_runs if r != e.run_id]
        return state


def _forget_start(budget: DeploymentBudget, run_id: str) -> None:
    """A blind run leaves the budget as if it never started. The open runs' starts are the
    last entries of `run_starts`, in the same order (a run starts only when none is open, so
    normally there is one); a run not open (a repeated finish) changes nothing."""
    if run_id not in budget.open_runs:
        return
    index = len(budget.run_starts) - len(budget.open_runs) + budget.open_runs.index(run_id)
    if 0 <= index < len(budget.run_starts):
        del budget.run_starts[index]
    budget.open_runs.remove(run_id)


def _pin(budget: DeploymentBudget, now: datetime) -> None:
    """Nothing recorded before `now`'s event is later than it. Starts stay in order (each was
    pinned to the event after it), so only the tail can be later."""
    starts = budget.run_starts
    i = len(starts)
    while i and starts[i - 1] > now:
        i -= 1
    starts[i:] = [now] * (len(starts) - i)
    if budget.last_failure_at is not None and budget.last_failure_at > now:
        budget.last_failure_at = now


def as_decided_at(budget: DeploymentBudget, now: datetime) -> tuple[DeploymentBudget, datetime | None]:
    """The budget as a decision at `now` reads it (times later than `now` counted as `now`),
    and the latest time it had to move, if any. `budget` itself is left as it is."""
    later = [t for t in (*budget.run_starts[-1:], budget.last_failure_at) if t is not None and t > now]
    if not later:
        return budget, None
    pinned = DeploymentBudget(run_starts=list(budget.run_starts), consecutive_failures=budget.consecutive_failures,
                              last_failure_at=budget.last_failure_at, open_runs=list(budget.open_runs))
    _pin(pinned, now)
    return pinned, max(later)


class GateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    reason: str
    next_allowed_at: datetime | None
    runs_in_window: int


def backoff(budget: DeploymentBudget, limits: RateLimitSettings) -> timedelta | None:
    """Exponential backoff once `backoff_after_failures` runs in a row have failed."""
    excess = budget.consecutive_failures - limits.backoff_after_failures
    if excess < 0:
        return None
    hours = min(limits.backoff_base_hours * 2 ** excess, limits.backoff_max_hours)
    return timedelta(hours=hours)


def next_allowed(budget: DeploymentBudget, limits: RateLimitSettings, now: datetime | None = None
                 ) -> datetime | None:
    """The earliest time a run may start: every rule is a lower bound, so take the latest.
    With `now`, times recorded later than it count as `now` (see the module's docstring)."""
    if now is not None:
        budget = as_decided_at(budget, now)[0]
    bounds: list[datetime] = []
    starts = budget.run_starts
    if starts:
        bounds.append(starts[-1] + timedelta(hours=limits.cooldown_hours))
        if len(starts) >= limits.runs:
            # the window must slide past the oldest of the last `runs` starts
            bounds.append(starts[-limits.runs] + timedelta(hours=limits.window_hours))
    wait = backoff(budget, limits)
    if wait is not None and budget.last_failure_at is not None:
        bounds.append(budget.last_failure_at + wait)
    return max(bounds, default=None)


def decide(budget: DeploymentBudget, limits: RateLimitSettings, now: datetime) -> GateDecision:
    budget, later = as_decided_at(budget, now)
    window_start = now - timedelta(hours=limits.window_hours)
    in_window = sum(1 for t in budget.run_starts if t > window_start)
    if budget.open_runs:
        return GateDecision(False, f"run {budget.open_runs[-1]} is still in progress", None, in_window)
    reasons = _blocking(budget, limits, now)
    if not reasons:
        return GateDecision(True, "within budget", None, in_window)
    if later is not None:
        reasons.append(f"clock: a time recorded at {utc_iso(later)}, later than this decision, counts as at it")
    return GateDecision(False, "; ".join(reasons), next_allowed(budget, limits), in_window)


def _blocking(budget: DeploymentBudget, limits: RateLimitSettings, now: datetime) -> list[str]:
    """The rules that refuse a run at `now` (a subset of next_allowed's reasons)."""
    out = []
    starts = budget.run_starts
    if starts and now < starts[-1] + timedelta(hours=limits.cooldown_hours):
        out.append(f"cooldown: {limits.cooldown_hours:g} h after the run at {utc_iso(starts[-1])}")
    window_start = now - timedelta(hours=limits.window_hours)
    in_window = [t for t in starts if t > window_start]
    if len(in_window) >= limits.runs:
        out.append(f"rate limit: {len(in_window)} run{'s' * (len(in_window) != 1)} in the last {limits.window_hours:g} h "
                   f"(limit {limits.runs})")
    wait = backoff(budget, limits)
    if wait is not None and budget.last_failure_at is not None and now < budget.last_failure_at + wait:
        out.append(f"backoff: {budget.consecutive_failures} failed run{'s' * (budget.consecutive_failures != 1)} in a row, "
                   f"waiting {wait.total_seconds() / 3600:g} h after the last")
    return out
