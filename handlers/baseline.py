"""Baselines: commit a promotion to the deployment's vLLM config, reload, verify, roll back.

Every effect is announced by an event before it happens and confirmed by one after, each
step in its own handler, so a selfheal killed anywhere resumes at the step it was in:
  PromotionProposed (dev) | PromotionApproved (prod)
    -> BaselineCommitStarted          (commit: decides the version; nothing written yet)
    -> BaselineCommitted + ReloadRequested   (write: atomic; skipped if the file already
                                              holds exactly these bytes, so never twice)
    -> VerificationFinished           (reload, health within a deadline, a short probe)
    -> RollbackStarted                (verification failed)
    -> RolledBack + ReloadRequested   (the previous file is back) -> VerificationFinished
Simulated results never reach this far: they end in PromotionNotCommitted.
"""
from __future__ import annotations

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.runtime import Emitted, Handler
from selfheal.projections.base import View
from selfheal.schemas.config import ConfigError
from selfheal.schemas.events import (
    BaselineCommitStarted, BaselineCommitted, PromotionNotCommitted, ReloadRequested, RollbackStarted, RolledBack,
    VerificationFinished,
)


class CommitPromotion(Handler):
    name = "commit"
    subscribes_to = frozenset({"PromotionProposed", "PromotionApproved"})

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def handle(self, event: Recorded, view: View) -> Emitted:
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


class WriteConfig(Handler):
    name = "commit-write"
    subscribes_to = frozenset({"BaselineCommitStarted", "RollbackStarted"})

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def handle(self, event: Recorded, view: View) -> Emitted:
        from selfheal.edges import vllm_config

        e = event.event
        edges = self.deployments[e.deployment]
        stream = f"deployment-{e.deployment}"
        method, target = _reload_target(edges.settings)
        if event.type == "BaselineCommitStarted":
            try:
                result = vllm_config.commit(e.path, e.config, edges.bounds)
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
                result = vllm_config.restore_previous(edges.settings.config_file)
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


class ReloadAndVerify(Handler):
    name = "reload-verify"
    subscribes_to = frozenset({"ReloadRequested"})

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def handle(self, event: Recorded, view: View) -> Emitted:
        from selfheal.edges import reload as reloading

        e = event.event
        settings = self.deployments[e.deployment].settings
        healthy, detail = True, "no reload configured: nothing to verify"
        try:
            if e.method == "restart":
                code, output = reloading.reload_restart(settings.reload.argv, settings.reload.timeout_s)
                if code != 0:
                    healthy, detail = False, f"restart command exited {code}: {output[-300:]}"
            elif e.method == "signal":
                reloading.reload_signal(settings.reload.pid, settings.reload.pidfile, settings.reload.signal)
                if settings.health_url:
                    reloading.wait_down(settings.health_url, min(30.0, settings.verify.deadline_s))
            if healthy and e.method != "none" and settings.health_url:
                healthy, detail = reloading.wait_healthy(settings.health_url, settings.verify.deadline_s)
                if healthy and settings.verify.probe_requests:
                    base = settings.health_url.rsplit("/health", 1)[0]
                    healthy, detail = reloading.probe(base, settings.model, settings.verify.probe_requests)
        except (reloading.ReloadError, OSError) as exc:
            healthy, detail = False, str(exc)
        finished = VerificationFinished(commit_id=e.commit_id, deployment=e.deployment, purpose=e.purpose,
                                        healthy=healthy, detail=detail)
        return [(f"deployment-{e.deployment}", event.follow(finished, self.name))]


class RollBackUnhealthy(Handler):
    name = "rollback"
    subscribes_to = frozenset({"VerificationFinished"})

    def handle(self, event: Recorded, view: View) -> Emitted:
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
