"""Observer handler: every captured incident becomes an observation or a recorded non-match.

The rules it uses are the active rule set of the log (RuleSetActivated; the built-in rules
until one is activated), loaded from the text recorded in the log, so a replay of any
moment uses the rules that were active then. A replay can also fix a candidate rule set.
"""
from __future__ import annotations

import msgspec

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.observer import rules
from selfheal.handlers.observer.accounting import diagnose_and_account
from selfheal.handlers.runtime import Emitted, Reactor
from selfheal.projections.base import View
from selfheal.schemas.events import IncidentCaptured, IncidentUnmatched, ObservationMade


#: what an observation keeps of a pathological incident (one 10 MB line of one repeated error
#: gives thousands of findings): the raw text stays in the incident, the evidence is a pointer
MAX_OTHERS = 20
MAX_EVIDENCE_CHARS = 4096


def _bounded(finding):
    evidence = [line if len(line) <= MAX_EVIDENCE_CHARS else line[:MAX_EVIDENCE_CHARS] + " [selfheal: cut]"
                for line in finding.evidence[:8]]
    return msgspec.structs.replace(finding, evidence=evidence) if evidence != finding.evidence else finding


def load_ruleset(text: str | None, source: str = "log"):
    """A RuleSet from recorded text, or the built-in one."""
    return rules.builtin_ruleset() if text is None else rules.parse_rules(text, source)


class ObserveIncident(Reactor):
    """Every incident through the active rule set: the finding (rule, numbers, seed fix) or a recorded non-match."""

    name = "observe"
    subscribes_to = (IncidentCaptured,)
    emits = (ObservationMade, IncidentUnmatched)

    def __init__(self, deployments: dict, safety_buffer: float, ruleset=None):
        self.deployments = deployments
        self.safety_buffer = safety_buffer
        self.fixed = ruleset
        self._loaded: dict[str, object] = {}

    def _ruleset(self, view: View):
        if self.fixed is not None:
            return self.fixed
        active = view["rulesets"].active if "rulesets" in view.states else None
        key = active.ruleset_id if active else "builtin"
        if key not in self._loaded:
            self._loaded[key] = load_ruleset(active.text if active else None, f"ruleset {key}")
        return self._loaded[key]

    def react(self, event: Recorded, view: View) -> Emitted:
        incident = event.event
        edges = self.deployments.get(incident.deployment)
        baseline = view["baselines"].current(incident.deployment)
        current = baseline.config if baseline else (edges.current if edges else None)
        ruleset = self._ruleset(view)
        # the start's memory figures too, in the same scan: the calibrated predictor's first fact,
        # which the intent carries on (issue 15.5)
        diagnosis, accounting = diagnose_and_account(ruleset, incident.raw_text, current,
                                                     edges.bounds if edges else None, self.safety_buffer)
        stream = f"incident-{incident.incident_id}"
        if diagnosis.primary is None:
            out = IncidentUnmatched(incident_id=incident.incident_id, deployment=incident.deployment,
                                    rules_version=ruleset.version)
            return [(stream, event.follow(out, self.name))]
        others = [_bounded(f) for f in diagnosis.findings if f is not diagnosis.primary][:MAX_OTHERS]
        out = ObservationMade(
            observation_id=derived_id(event.event_id, self.name), incident_id=incident.incident_id,
            deployment=incident.deployment, finding=_bounded(diagnosis.primary), others=others,
            environment=incident.context.get("environment", ""), canary_id=incident.source.canary_id,
            accounting=accounting,
        )
        return [(stream, event.follow(out, self.name))]
