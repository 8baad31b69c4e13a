"""Observer handler: every captured incident becomes an observation or a recorded non-match."""
from __future__ import annotations

from eventstore.store import Recorded, derived_id
from handlers.runtime import Emitted, Handler
from projections.base import View
from schemas.events import IncidentUnmatched, ObservationMade

RULES_VERSION = "builtin-1"


class ObserveIncident(Handler):
    name = "observe"
    subscribes_to = frozenset({"IncidentCaptured"})

    def __init__(self, deployments: dict, safety_buffer: float):
        self.deployments = deployments
        self.safety_buffer = safety_buffer

    def handle(self, event: Recorded, view: View) -> Emitted:
        from handlers.observer import diagnose

        incident = event.event
        edges = self.deployments.get(incident.deployment)
        baseline = view["baselines"].current(incident.deployment)
        current = baseline.config if baseline else (edges.current if edges else None)
        diagnosis = diagnose(incident.raw_text, current=current, bounds=edges.bounds if edges else None,
                             safety_buffer=self.safety_buffer)
        stream = f"incident-{incident.incident_id}"
        if diagnosis.primary is None:
            out = IncidentUnmatched(incident_id=incident.incident_id, deployment=incident.deployment,
                                    rules_version=RULES_VERSION)
            return [(stream, event.follow(out, self.name))]
        others = [f for f in diagnosis.findings if f is not diagnosis.primary]
        out = ObservationMade(
            observation_id=derived_id(event.event_id, self.name), incident_id=incident.incident_id, deployment=incident.deployment,
            finding=diagnosis.primary, others=others, environment=incident.context.get("environment", ""),
            canary_id=incident.source.canary_id,
        )
        return [(stream, event.follow(out, self.name))]
