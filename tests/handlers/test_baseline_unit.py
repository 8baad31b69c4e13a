"""The baseline handlers on their own: commit decides the version, commit-write writes through a
fake ConfigFile, reload-verify reloads through a fake Reloader, rollback decides to go back."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from selfheal.eventstore import derived_id
from selfheal.handlers.baseline import CommitPromotion, ReloadAndVerify, RollBackUnhealthy, WriteConfig
from selfheal.handlers.ports import Verification
from selfheal.schemas.config import ConfigError
from selfheal.schemas.events import (
    BaselineCommitStarted, BaselineCommitted, BaselineImported, PromotionApproved, PromotionLapsed,
    PromotionProposed, PromotionRejected, ReloadRequested, RollbackStarted, VerificationFinished,
)
from tests.handlers.given_when_then import DEPLOYMENT, PRODUCTION, Given, T0, at, deployment, settings

PATH = "/etc/vllm/ws.yaml"
WITH_FILE = settings(extra=f'config_file = "{PATH}"\n[deployments.{DEPLOYMENT}.reload]\n'
                           'method = "restart"\nargv = ["systemctl", "restart", "vllm"]\n')
WINNER = PRODUCTION.changed(gpu_memory_utilization=0.85)
STREAM = f"deployment-{DEPLOYMENT}"
COMMIT_ID = derived_id("p1", "commit")


def promotion(*, simulated: bool = False, requires_approval: bool = False) -> PromotionProposed:
    return PromotionProposed(promotion_id="p1", run_id="r1", deployment=DEPLOYMENT, candidate_id="c1", config=WINNER,
                             previous=PRODUCTION, fitness=90.0, evidence_hash="sha256:e", simulated=simulated,
                             requires_approval=requires_approval)


def imported() -> tuple:
    return (STREAM, BaselineImported(deployment=DEPLOYMENT, version=1, config=PRODUCTION, source="import"), at(-1))


# -- commit ---------------------------------------------------------------------------------

def commit(settings_=WITH_FILE) -> CommitPromotion:
    return CommitPromotion(deployment(settings_))


def test_a_dev_promotion_starts_the_commit_of_the_next_version():
    given = Given(imported(), ("promotion-p1", promotion()))
    then = given.when(commit())
    assert then.types == ["BaselineCommitStarted"] and then.streams == [STREAM]
    started = then.events[0]
    assert (started.commit_id, started.promotion_id, started.deployment) == (COMMIT_ID, "p1", DEPLOYMENT)
    assert (started.version, started.config, started.path) == (2, WINNER, PATH)
    then.caused(T0)


def test_the_first_commit_of_a_deployment_without_a_baseline_is_version_1():
    assert Given(("promotion-p1", promotion())).when(commit()).one("BaselineCommitStarted").version == 1


def test_a_simulated_promotion_is_never_committed():
    then = Given(imported(), ("promotion-p1", promotion(simulated=True))).when(commit())
    assert then.types == ["PromotionNotCommitted"] and then.streams == ["promotion-p1"]
    skipped = then.events[0]
    assert (skipped.promotion_id, skipped.deployment) == ("p1", DEPLOYMENT)
    assert skipped.reason == "simulated results are never committed to a production baseline"
    then.caused(T0)


def test_a_deployment_without_a_config_file_is_not_committed():
    then = Given(("promotion-p1", promotion())).when(commit(settings()))
    assert then.types == ["PromotionNotCommitted"]
    assert then.one("PromotionNotCommitted").reason == f"deployment {DEPLOYMENT!r} has no config_file to write"


def test_a_prod_promotion_waits_for_approval_then_commits():
    given = Given(imported(), ("promotion-p1", promotion(requires_approval=True)))
    assert given.when(commit()).emitted == []
    approval = PromotionApproved(promotion_id="p1", by="ops", evidence_hash="sha256:e", expires_at=at(24))
    given.record("promotion-p1", approval, at(hours=2))
    then = given.when(commit())
    assert then.types == ["BaselineCommitStarted"] and then.one("BaselineCommitStarted").version == 2
    then.caused(at(hours=2))


def test_an_approval_that_expired_before_the_commit_ran_is_left_alone():
    given = Given(imported(), ("promotion-p1", promotion(requires_approval=True)))
    approval = given.record("promotion-p1", PromotionApproved(promotion_id="p1", by="ops", evidence_hash="sha256:e",
                                                              expires_at=at(24)), at(hours=1))
    lapsed = PromotionLapsed(promotion_id="p1", reason="the approval expired before the commit ran")
    given.record("promotion-p1", lapsed, at(hours=25))
    assert given.when(commit(), approval).emitted == []


def test_a_promotion_already_committing_is_not_committed_twice():
    given = Given(("promotion-p1", promotion()))
    given.when(commit()).record()
    assert given.when(commit(), given.events("PromotionProposed")[0]).emitted == []


def test_a_rejected_promotion_is_never_committed_even_if_an_approval_follows():
    given = Given(imported(), ("promotion-p1", promotion(requires_approval=True)),
                  ("promotion-p1", PromotionRejected(promotion_id="p1", by="alice", note="too risky")))
    approval = PromotionApproved(promotion_id="p1", by="bob", evidence_hash="sha256:e", expires_at=at(24))
    given.record("promotion-p1", approval)
    assert given.when(commit()).emitted == []


# -- commit-write -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Written:
    path: Path
    sha256: str
    changed: bool = True
    previous_path: Path | None = None


class ConfigFile:
    """A fake ConfigFile: remembers every call; refuses with a ConfigError if told to."""

    def __init__(self, refuse: str | None = None):
        self.refuse, self.calls = refuse, []

    def commit(self, path, config, bounds):
        self.calls.append(("commit", path, config, bounds))
        if self.refuse:
            raise ConfigError(self.refuse)
        return Written(Path(path), "sha256:new", True, Path(path + ".previous"))

    def restore_previous(self, path):
        self.calls.append(("restore", path))
        if self.refuse:
            raise ConfigError(self.refuse)
        return Written(Path(path), "sha256:old", True, None)


def commit_started() -> Given:
    given = Given(imported(), ("promotion-p1", promotion()))
    given.when(commit()).record()
    return given


def test_commit_write_writes_the_file_then_asks_for_a_reload():
    config_file = ConfigFile()
    edges = deployment(WITH_FILE, config_file=config_file)
    then = commit_started().when(WriteConfig(edges))
    assert config_file.calls == [("commit", PATH, WINNER, edges[DEPLOYMENT].bounds)]
    assert then.types == ["BaselineCommitted", "ReloadRequested"] and then.streams == [STREAM, STREAM]
    committed, reload = then.events
    assert committed == BaselineCommitted(commit_id=COMMIT_ID, deployment=DEPLOYMENT, version=2, config=WINNER,
                                          path=PATH, sha256="sha256:new", changed=True,
                                          previous_path=PATH + ".previous")
    assert reload == ReloadRequested(commit_id=COMMIT_ID, deployment=DEPLOYMENT, purpose="commit",
                                     method="restart", target="systemctl restart vllm")
    then.caused(T0)


def test_without_reload_settings_the_reload_is_none():
    no_reload = settings(extra=f'config_file = "{PATH}"')
    then = commit_started().when(WriteConfig(deployment(no_reload, config_file=ConfigFile())))
    assert (then.one("ReloadRequested").method, then.one("ReloadRequested").target) == ("none", "")


def test_a_refused_write_is_a_promotion_not_committed():
    config_file = ConfigFile(refuse=f"{PATH}: max_num_seqs=18 outside [2, 16]")
    then = commit_started().when(WriteConfig(deployment(WITH_FILE, config_file=config_file)))
    assert then.types == ["PromotionNotCommitted"] and then.streams == [STREAM]
    refused = then.events[0]
    assert (refused.promotion_id, refused.reason) == ("p1", f"{PATH}: max_num_seqs=18 outside [2, 16]")
    then.caused(T0)


def rollback_started() -> Given:
    given = commit_started()
    given.when(WriteConfig(deployment(WITH_FILE, config_file=ConfigFile()))).record()
    given.record(STREAM, RollbackStarted(commit_id=COMMIT_ID, deployment=DEPLOYMENT, restore_version=1,
                                         reason="verification failed: 502"), at(minutes=5))
    return given


def test_commit_write_restores_the_previous_file_for_a_rollback():
    config_file = ConfigFile()
    then = rollback_started().when(WriteConfig(deployment(WITH_FILE, config_file=config_file)))
    assert config_file.calls == [("restore", PATH)]
    assert then.types == ["RolledBack", "ReloadRequested"] and then.streams == [STREAM, STREAM]
    rolled, reload = then.events
    assert (rolled.commit_id, rolled.restored_version, rolled.reason, rolled.sha256) == (
        COMMIT_ID, 1, "verification failed: 502", "sha256:old")
    assert (reload.purpose, reload.method) == ("rollback", "restart")
    then.caused(at(minutes=5))


def test_a_rollback_that_cannot_restore_is_an_unhealthy_verification():
    config_file = ConfigFile(refuse="no previous version kept")
    then = rollback_started().when(WriteConfig(deployment(WITH_FILE, config_file=config_file)))
    assert then.types == ["VerificationFinished"]
    failed = then.events[0]
    assert (failed.purpose, failed.healthy, failed.detail) == ("rollback", False,
                                                               "rollback impossible: no previous version kept")


# -- reload-verify -----------------------------------------------------------------------------

class Reloader:
    """Answers as a server that took 45 s to restart and pass its checks."""

    def __init__(self, healthy: bool, detail: str):
        self.answer, self.methods = (healthy, detail), []

    def reload_and_verify(self, method: str, started_at: datetime) -> Verification:
        self.methods.append(method)
        return Verification(healthy=self.answer[0], detail=self.answer[1],
                            finished_at=started_at + timedelta(seconds=45))


def reload_requested(purpose: str = "commit") -> Given:
    return Given((STREAM, ReloadRequested(commit_id="k1", deployment=DEPLOYMENT, purpose=purpose, method="restart",
                                          target="systemctl restart vllm"), at(minutes=1)))


def test_reload_verify_records_a_healthy_server():
    reloader = Reloader(True, "healthy after 12 s; 3/3 probe requests")
    then = reload_requested().when(ReloadAndVerify(deployment(WITH_FILE, reloader=reloader)))
    assert reloader.methods == ["restart"]
    assert then.types == ["VerificationFinished"] and then.streams == [STREAM]
    assert then.events[0] == VerificationFinished(commit_id="k1", deployment=DEPLOYMENT, purpose="commit",
                                                  healthy=True, detail="healthy after 12 s; 3/3 probe requests")
    then.caused(at(minutes=1, seconds=45))  # dated when the reloader finished, not at its request


def test_reload_verify_records_an_unhealthy_server():
    reloader = Reloader(False, "no health within 300 s")
    then = reload_requested("rollback").when(ReloadAndVerify(deployment(WITH_FILE, reloader=reloader)))
    finished = then.one("VerificationFinished")
    assert (finished.purpose, finished.healthy, finished.detail) == ("rollback", False, "no health within 300 s")


# -- rollback ----------------------------------------------------------------------------------

def verified(healthy: bool, purpose: str = "commit", baseline: bool = True) -> Given:
    given = Given(*([imported()] if baseline else []))
    given.record(STREAM, BaselineCommitStarted(commit_id="k2", deployment=DEPLOYMENT, promotion_id="p1",
                                               version=2 if baseline else 1, config=WINNER, path=PATH))
    given.record(STREAM, BaselineCommitted(commit_id="k2", deployment=DEPLOYMENT, version=2 if baseline else 1,
                                           config=WINNER, path=PATH, sha256="sha256:new"))
    given.record(STREAM, VerificationFinished(commit_id="k2", deployment=DEPLOYMENT, purpose=purpose,
                                              healthy=healthy, detail="HTTP 502 from /health"), at(minutes=3))
    return given


def test_an_unhealthy_commit_rolls_back_to_the_previous_version():
    then = verified(healthy=False).when(RollBackUnhealthy())
    assert then.types == ["RollbackStarted"] and then.streams == [STREAM]
    assert then.events[0] == RollbackStarted(commit_id="k2", deployment=DEPLOYMENT, restore_version=1,
                                             reason="verification failed: HTTP 502 from /health")
    then.caused(at(minutes=3))


def test_a_healthy_commit_stays():
    assert verified(healthy=True).when(RollBackUnhealthy()).emitted == []


def test_an_unhealthy_rollback_does_not_roll_back_again():
    assert verified(healthy=False, purpose="rollback").when(RollBackUnhealthy()).emitted == []


def test_nothing_to_roll_back_to_without_an_earlier_version():
    assert verified(healthy=False, baseline=False).when(RollBackUnhealthy()).emitted == []
