"""Baselines: the known-good configuration of each deployment, versioned in the log."""
from __future__ import annotations

from datetime import datetime

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection
from selfheal.schemas.serving import ServingConfig


class BaselineVersion(msgspec.Struct):
    version: int
    config: ServingConfig
    source: str
    at: datetime
    commit_id: str | None = None
    #: None until a reload and verification of this version has finished
    verified: bool | None = None


class Baselines(msgspec.Struct):
    history: dict[str, list[BaselineVersion]] = {}
    environments: dict[str, str] = {}
    #: commit id -> (deployment, version) of what it wrote
    commits: dict[str, tuple[str, int]] = {}

    def current(self, deployment: str) -> BaselineVersion | None:
        versions = self.history.get(deployment)
        return versions[-1] if versions else None

    def version(self, deployment: str, number: int) -> BaselineVersion | None:
        return _find(self.history.get(deployment, []), number)


class BaselinesProjection(Projection[Baselines]):
    name = "baselines"
    types = frozenset({"BaselineImported", "BaselineCommitStarted", "BaselineCommitted", "RolledBack",
                       "VerificationFinished"})

    def initial(self) -> Baselines:
        return Baselines()

    def apply(self, state: Baselines, event: Recorded) -> Baselines:
        e = event.event
        versions = state.history.setdefault(e.deployment, [])
        if event.type == "BaselineImported":
            versions.append(BaselineVersion(e.version, e.config, e.source, event.occurred))
            if e.environment:
                state.environments[e.deployment] = e.environment
        elif event.type == "BaselineCommitStarted":
            state.commits[e.commit_id] = (e.deployment, e.version)
        elif event.type == "BaselineCommitted":
            # a version exists once its file is written; verification then marks it good or not
            versions.append(BaselineVersion(e.version, e.config, f"commit {e.commit_id[:8]}", event.occurred,
                                            commit_id=e.commit_id))
        elif event.type == "VerificationFinished":
            if versions and versions[-1].commit_id == e.commit_id:
                versions[-1].verified = e.healthy
        elif event.type == "RolledBack":
            restored = _find(versions, e.restored_version)
            if restored is not None:
                versions.append(BaselineVersion(versions[-1].version + 1, restored.config,
                                                f"rollback to v{e.restored_version}", event.occurred,
                                                commit_id=e.commit_id))
        return state


def _find(versions: list[BaselineVersion], number: int) -> BaselineVersion | None:
    return next((v for v in versions if v.version == number), None)
