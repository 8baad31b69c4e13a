"""Baselines: commit a promotion to the deployment's vLLM config, reload, verify, roll back.

Every effect is announced by an event before it happens and confirmed by one after, each
step in its own handler (reactors decide, activities act through the deployment's
`config_file` and `reloader` ports), so a selfheal killed anywhere resumes at the step it
was in:
  PromotionProposed (dev) | PromotionApproved (prod)
    -> BaselineCommitStarted          (commit: decides the version; nothing written yet)
    -> BaselineCommitted + ReloadRequested   (write: atomic; skipped if the file already
                                              holds exactly these bytes, so never twice)
    -> VerificationFinished           (reload, health within a deadline, a short probe;
                                       dated when they ended, as the reloader reports)
    -> RollbackStarted                (verification failed)
    -> RolledBack + ReloadRequested   (the previous file is back) -> VerificationFinished
Simulated results never reach this far: they end in PromotionNotCommitted.
"""
from __future__ import annotations

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.ports import Verification
from selfheal.handlers.runtime import Activity, Emitted, Progress, Reactor
from selfheal.projections.base import View
from selfheal.schemas.config import ConfigError
from selfheal.schemas.events import (
    BaselineCommitStarted, BaselineCommitted, PromotionApproved, PromotionNotCommitted, PromotionProposed,
    ReloadRequested, RollbackStarted, RolledBack, VerificationFinished,
)


class CommitPromotion(Reactor):
    """A dev promotion, or an approved prod one, becomes a commit of the next baseline version."""

    name = "commit"
    subscribes_to = (PromotionProposed, PromotionApproved)
    emits = (BaselineCommitStarted, PromotionNotCommitted)

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def react(self, event: Recorded, view: View) -> Emitted:
        promotion = view["promotions"].by_id.get(event.event.promotion_id)
        if promotion is None:
            return ()
        if event.type == "PromotionProposed" and promotion.requires_approval:
            return ()  # prod: waits for a person
        if promotion.status not in ("waiting", "approved"):
            return ()  # rejected, lapsed or already committing
        stream = f"promotion-{promotion.promotion_id}"
        edges = self.deployments.get(promotion.deployment)
        reason = None
        if promotion.simulated:
            reason = "simulated results are never committed to a production baseline"
        elif edges is None or not edges.settings.config_file:
            reason = f"deployment {promotion.deployment!r} has no config_file to write"
        if reason:
            skipped = PromotionNotCommitted(promotion_id=promotion.promotion_id, deployment=promotion.deployment,
                                            reason=reason)
            return [(stream, event.follow(skipped, "not-committed"))]
        current = view["baselines"].current(promotion.deployment)
        version = (current.version if current else 0) + 1
        started = BaselineCommitStarted(commit_id=derived_id(promotion.promotion_id, "commit"),
                                        deployment=promotion.deployment, promotion_id=promotion.promotion_id,
                                        version=version, config=promotion.config,
                                        path=edges.settings.config_file)
        return [(f"deployment-{promotion.deployment}", event.follow(started, "commit-started"))]


def _reload_target(settings) -> tuple[str, str]:
    reload = settings.reload
    if reload is None or reload.method == "none":
        return "none", ""
    if reload.method == "restart":
        return "restart", " ".join(reload.argv)
    return "signal", f"{reload.signal} to {reload.pidfile or reload.pid}"


class WriteConfig(Activity):
    """Writes the vLLM YAML atomically (or restores the previous file), then asks for a reload."""

    name = "commit-write"
    port = "config_file"
    subscribes_to = (BaselineCommitStarted, RollbackStarted)
    emits = (BaselineCommitted, RolledBack, ReloadRequested, PromotionNotCommitted, VerificationFinished)

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def perform(self, event: Recorded, view: View, progress: Progress) -> Emitted:
        e = event.event
        edges = self.deployments.get(e.deployment)
        stream = f"deployment-{e.deployment}"
        if edges is None:  # removed from the config after the commit began: say so, write nothing
            gone = PromotionNotCommitted(promotion_id=getattr(e, "promotion_id", None) or "", deployment=e.deployment,
                                         reason=f"deployment {e.deployment!r} is no longer configured")
            return [(stream, event.follow(gone, "gone"))]
        method, target = _reload_target(edges.settings)
        if event.type == "BaselineCommitStarted":
            try:
                result = edges.config_file.commit(e.path, e.config, edges.bounds)
            except ConfigError as exc:  # refused with nothing written: say so instead of retrying forever
                refused = PromotionNotCommitted(promotion_id=e.promotion_id or "", deployment=e.deployment,
                                                reason=str(exc))
                return [(stream, event.follow(refused, "refused"))]
            done = BaselineCommitted(commit_id=e.commit_id, deployment=e.deployment, version=e.version,
                                     config=e.config, path=str(result.path), sha256=result.sha256,
                                     changed=result.changed,
                                     previous_path=str(result.previous_path) if result.previous_path else None)
            purpose = "commit"
        else:
            try:
                result = edges.config_file.restore_previous(edges.settings.config_file)
            except ConfigError as exc:
                failed = VerificationFinished(commit_id=e.commit_id, deployment=e.deployment, purpose="rollback",
                                              healthy=False, detail=f"rollback impossible: {exc}")
                return [(stream, event.follow(failed, "restore-failed"))]
            done = RolledBack(commit_id=e.commit_id, deployment=e.deployment, restored_version=e.restore_version,
                              reason=e.reason, sha256=result.sha256)
            purpose = "rollback"
        reload = ReloadRequested(commit_id=e.commit_id, deployment=e.deployment, purpose=purpose, method=method,
                                 target=target)
        return [(stream, event.follow(done, "written")), (stream, event.follow(reload, "reload"))]


class ReloadAndVerify(Activity):
    """Reloads production, waits for health, runs a short probe."""

    name = "reload-verify"
    port = "reloader"
    subscribes_to = (ReloadRequested,)
    emits = (VerificationFinished,)

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def perform(self, event: Recorded, view: View, progress: Progress) -> Emitted:
        e = event.event
        edges = self.deployments.get(e.deployment)
        result = (edges.reloader.reload_and_verify(e.method, event.occurred) if edges is not None
                  else Verification(healthy=False, detail=f"deployment {e.deployment!r} is no longer configured: "
                                    "nothing was reloaded"))
        finished = VerificationFinished(commit_id=e.commit_id, deployment=e.deployment, purpose=e.purpose,
                                        healthy=result.healthy, detail=result.detail)
        # dated when the port says it finished: the request's time plus the restart, health wait
        # and probe (often a minute), not the canary's end that the request inherited
        return [(f"deployment-{e.deployment}", event.follow(finished, self.name, occurred_at=result.finished_at))]


class RollBackUnhealthy(Reactor):
    """A commit that failed verification rolls back to the previous version."""

    name = "rollback"
    subscribes_to = (VerificationFinished,)
    emits = (RollbackStarted,)

    def react(self, event: Recorded, view: View) -> Emitted:
        e = event.event
        if e.healthy or e.purpose != "commit":
            return ()
        versions = view["baselines"].history.get(e.deployment, [])
        written = [v for v in versions if v.commit_id == e.commit_id]
        earlier = [v for v in versions if written and v.version < written[0].version]
        if not earlier:
            return ()
        started = RollbackStarted(commit_id=e.commit_id, deployment=e.deployment, restore_version=earlier[-1].version,
                                  reason=f"verification failed: {e.detail}")
        return [(f"deployment-{e.deployment}", event.follow(started, self.name))]
