"""Baselines: the known-good configuration of each deployment, versioned in the log."""
from __future__ import annotations

from datetime import datetime

import msgspec

from eventstore.store import Recorded
from projections.base import Projection
from schemas.serving import ServingConfig


class BaselineVersion(msgspec.Struct, frozen=True):
    version: int
    config: ServingConfig
    source: str
    at: datetime


class Baselines(msgspec.Struct):
    history: dict[str, list[BaselineVersion]] = {}
    environments: dict[str, str] = {}

    def current(self, deployment: str) -> BaselineVersion | None:
        versions = self.history.get(deployment)
        return versions[-1] if versions else None


class BaselinesProjection(Projection[Baselines]):
    name = "baselines"
    types = frozenset({"BaselineImported", "BaselineCommitted", "RolledBack"})

    def initial(self) -> Baselines:
        return Baselines()

    def apply(self, state: Baselines, event: Recorded) -> Baselines:
        e = event.event
        versions = state.history.setdefault(e.deployment, [])
        if event.type == "BaselineImported":
            versions.append(BaselineVersion(e.version, e.config, e.source, event.occurred))
            if e.environment:
                state.environments[e.deployment] = e.environment
        elif event.type == "BaselineCommitted":
            versions.append(BaselineVersion(e.version, e.config, f"commit {e.commit_id}", event.occurred))
        else:
            restored = next((v for v in versions if v.version == e.restored_version), None)
            if restored is not None:
                versions.append(BaselineVersion(len(versions) + 1, restored.config,
                                                f"rollback to v{e.restored_version}", event.occurred))
        return state
