"""Rule sets and verdicts: which rules are active, what was proposed, shadowed and approved,
and how people labelled incidents."""
from __future__ import annotations

from datetime import datetime

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection


class RuleSetSummary(msgspec.Struct):
    ruleset_id: str
    version: str
    source: str
    text: str
    proposed_at: datetime
    reports: list[dict] = []
    approvals: list[dict] = []
    activated_at: datetime | None = None


class RuleSets(msgspec.Struct):
    by_id: dict[str, RuleSetSummary] = {}
    #: ruleset ids in the order they became active (empty: the built-in rules are active)
    active_history: list[str] = []
    verdicts: dict[str, str] = {}

    @property
    def active(self) -> RuleSetSummary | None:
        return self.by_id[self.active_history[-1]] if self.active_history else None

    def latest_report(self, ruleset_id: str) -> dict | None:
        found = self.by_id.get(ruleset_id)
        return found.reports[-1] if found and found.reports else None


class RuleSetsProjection(Projection[RuleSets]):
    name = "rulesets"
    types = frozenset({"RuleSetProposed", "RuleSetShadowed", "RuleSetApproved", "RuleSetActivated",
                       "VerdictRecorded"})

    def initial(self) -> RuleSets:
        return RuleSets()

    def apply(self, state: RuleSets, event: Recorded) -> RuleSets:
        e, t = event.event, event.type
        if t == "VerdictRecorded":
            state.verdicts[e.incident_id] = e.kind
        elif t == "RuleSetProposed":
            state.by_id.setdefault(e.ruleset_id, RuleSetSummary(
                ruleset_id=e.ruleset_id, version=e.version, source=e.source, text=e.text,
                proposed_at=event.occurred))
        elif e.ruleset_id in state.by_id:
            found = state.by_id[e.ruleset_id]
            if t == "RuleSetShadowed":
                found.reports.append({"report_hash": e.report_hash, "against": e.against, "incidents": e.incidents,
                                      "agreements": e.agreements, "disagreements": len(e.disagreements),
                                      "precision": e.precision, "recall": e.recall})
            elif t == "RuleSetApproved":
                found.approvals.append({"report_hash": e.report_hash, "by": e.by})
            else:
                found.activated_at = event.occurred
                state.active_history.append(e.ruleset_id)
        return state
