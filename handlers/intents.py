"""Intent handler: an observation becomes one intent (tune with a seed fix, or alert).

The seed fix is bounded here: values are clamped to the actuators only on the side of
safety; a fix that needs a value outside the bounds is an escalation with the evidence,
never a run. The same failure of the same configuration, with the same numbers (within 10%),
inside the window folds into the intent already raised for it; different numbers, or an
incident recorded with `heal --force`, raise an intent of their own, whose reason says why; one
dated after the observation (a clock that jumped) is expired, not fresh, and the new intent's
reason says so (projections/intents.py). An intent that ends in an alert says until when a
repeat folds into it and how to retry sooner.
"""
from __future__ import annotations

from datetime import timedelta

from selfheal.eventstore.recorder import utc_iso
from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.models.directed import deployment_kv_size, inside_bounds, powerless
from selfheal.handlers.models.calibration import StartFacts
from selfheal.handlers.predict import CalibratedPredictor, own_or_calibrated
from selfheal.handlers.runtime import Emitted, Reactor
from selfheal.projections.base import View
from selfheal.projections.intents import future_dated, retry_hint
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.events import (
    TOLD_ONLY, EscalationRaised, IntentArchived, IntentDeduplicated, IntentRaised, ObservationMade,
)
from selfheal.schemas.fingerprints import text_fingerprint
from selfheal.schemas.serving import TUNABLE, ServingConfig


def bound_seed(current: ServingConfig, fix: dict, direction: dict, bounds: ActuatorBounds,
               max_changes: int, lost: dict[str, str] | None = None) -> tuple[ServingConfig | None, list[str]]:
    """The seed configuration inside the bounds, or None and why it cannot be; `lost` names
    the actuators a setting of the deployment makes powerless, and why (models/directed.py)."""
    problems: list[str] = []
    values: dict = {}
    for name, target in fix.items():
        if name not in TUNABLE:
            continue
        if lost and name in lost:
            problems.append(lost[name])
            continue
        if name == "enforce_eager":
            if target and not bounds.enforce_eager_allowed:
                problems.append("needs enforce_eager=true, which this deployment does not allow")
            values[name] = bool(target)
            continue
        if name not in bounds.numeric() or target is None or getattr(current, name) is None:
            problems.append(f"needs {name}={target}, which this deployment does not hand to selfheal")
            continue
        actuator = bounds.numeric()[name]
        way = direction.get(name) or ("decrease" if target < getattr(current, name) else "increase")
        if target > actuator.max:
            if way != "decrease":
                problems.append(f"needs {name}={target:g}, above the maximum {actuator.max:g}")
                continue
            target = actuator.max
        elif target < actuator.min:
            if way != "increase":
                problems.append(f"needs {name}={target:g}, below the minimum {actuator.min:g}")
                continue
            target = actuator.min
        snap = actuator.floor if way == "decrease" else actuator.ceil
        value = snap(target)
        if not actuator.contains(value):
            # the grid point beyond the target lies outside the bounds (a max off the grid)
            problems.append(f"needs {name}={value:g} on the actuator's grid, outside [{actuator.min:g}, {actuator.max:g}]")
            continue
        now = getattr(current, name)
        if (way == "increase" and value < now) or (way == "decrease" and value > now):
            problems.append(f"the fix would {way} {name} to {value:g} from {now:g}")
            continue
        values[name] = value
    if problems:
        return None, problems
    changed = {k: v for k, v in values.items() if getattr(current, k) != v}
    if not changed:
        return None, ["the fix changes nothing inside the bounds"]
    if len(changed) > max_changes:
        changed = dict(list(changed.items())[:max_changes])
    return current.changed(**changed), []


def fingerprint(deployment: str, kind: str, rule: str, current: ServingConfig) -> str:
    """The same failure kind, by the same rule, of the same configuration."""
    text = "\x1f".join([deployment, kind, rule, repr(sorted(current.as_dict().items()))])
    return text_fingerprint(text, prefix="fp:")


class RaiseIntent(Reactor):
    """One intent per failure: tune with the seed fix bounded to the actuators, or alert; repeats inside the window fold in."""

    name = "intents"
    subscribes_to = (ObservationMade,)
    emits = (IntentRaised, IntentDeduplicated, EscalationRaised, IntentArchived)

    def __init__(self, deployments: dict, window_minutes: float, max_changes: int):
        self.deployments = deployments
        self.window = timedelta(minutes=window_minutes)
        self.max_changes = max_changes

    @staticmethod
    def _predictor(edges, obs, current: ServingConfig, view: View):
        """The deployment's predictor (the simulator's for a sim deployment); a real deployment has
        none, and gets the one calibrated from what vLLM printed in this failure and its earlier
        canaries (issue 15.5), as the tournament does."""
        production = StartFacts(source=obs.incident_id, config=current, numbers=dict(obs.accounting))
        return own_or_calibrated(edges.predictor, view, lambda: CalibratedPredictor.for_failure(
            view, obs.deployment, obs.environment, production))

    def react(self, event: Recorded, view: View) -> Emitted:
        obs = event.event
        if obs.canary_id is not None:
            return ()  # a canary's own output is evidence for its run, not a new incident
        edges = self.deployments.get(obs.deployment)
        baseline = view["baselines"].current(obs.deployment)
        current = baseline.config if baseline else (edges.current if edges else ServingConfig())
        finding = obs.finding
        fp = fingerprint(obs.deployment, finding.kind, finding.rule, current)
        intents, forced = view["intents"], view["intents"].is_forced(obs.incident_id)
        recent = None if forced else intents.recent(obs.deployment, fp, event.occurred, self.window, finding.numbers)
        if recent is not None:
            dup = IntentDeduplicated(intent_id=recent.intent_id, incident_id=obs.incident_id, fingerprint=fp,
                                     window_s=int(self.window.total_seconds()))
            return [(f"intent-{recent.intent_id}", event.follow(dup, self.name))]

        intent_id = derived_id(event.event_id, "intent")
        action, reason, seed = finding.action, finding.note, {}
        latest, clock = view["intents"].latest_for(obs.deployment, fp), ""
        if latest is not None and future_dated(latest, event.occurred):  # a clock that jumped: say why not folded
            clock = (f"the intent {latest.intent_id[:8]} raised for this failure is dated "
                     f"{utc_iso(latest.raised_at)}, after this observation: expired, not a repeat")
        if edges is None:
            action, reason = "alert", f"deployment {obs.deployment!r} is not configured"
        elif finding.confidence in TOLD_ONLY:
            # the policy for a log cut short, or a runtime symptom seen fewer times than a window
            # needs: the failure itself is not seen, so it is told and never tuned; stated and
            # inferred findings (vLLM's own error or accounting) may tune
            action = "alert"
        elif action == "tune":
            lost = powerless([finding.kind], deployment_kv_size(edges))
            config, problems = bound_seed(current, finding.fix, finding.fix_direction, edges.bounds,
                                          self.max_changes, lost)
            if config is None:
                # search inside the bounds before escalating (issue 15.1): never a value outside them
                predictor = self._predictor(edges, obs, current, view)
                found, why = inside_bounds(current, finding.fix, finding.fix_direction, finding.kind, edges.bounds,
                                           self.max_changes, lambda c: predictor.predict(c, current), lost)
                reason = "seed fix outside the bounds: " + "; ".join(problems) + "; " + why
                action, seed = ("alert", {}) if found is None else ("tune", found)
            else:
                seed = {k: new for k, (_, new) in current.diff(config).items()}
        elif not reason:
            reason = f"{finding.kind}: no bounded fix applies"
        apart = intents.apart(obs.deployment, fp, event.occurred, self.window, finding.numbers, forced)
        reason = "; ".join(part for part in (reason, clock, apart) if part)
        until = event.occurred + self.window
        raised = IntentRaised(intent_id=intent_id, deployment=obs.deployment, incident_id=obs.incident_id,
                              observation_id=obs.observation_id, kind=finding.kind, action=action,
                              fingerprint=fp, seed_fix=seed, current=current, environment=obs.environment,
                              reason=reason, numbers=finding.numbers, dedupe_until=until,
                              accounting=obs.accounting)
        stream = f"intent-{intent_id}"
        out = [(stream, event.follow(raised, "intent"))]
        if action == "alert":
            escalation = EscalationRaised(run_id=None, intent_id=intent_id, deployment=obs.deployment,
                                          reason=reason, retry=retry_hint(intent_id, until))
            archived = IntentArchived(intent_id=intent_id, deployment=obs.deployment, outcome="alerted")
            out += [(stream, event.follow(escalation, "escalation")), (stream, event.follow(archived, "archived"))]
        return out
