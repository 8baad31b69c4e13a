"""Escrow in prod mode, with freezegun at the edge where people decide: expiry, a changed
premise, rejection, and the whole prod flow from incident to a committed file."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from freezegun import freeze_time

from selfheal.edges import deployments
from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import Pending, new_id, open_store
from selfheal.handlers import loop
from selfheal.handlers.escrow import EscrowError, approve, lapse_expired, reject
from selfheal.projections import view_as_of
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import BaselineCommitted, IncidentSource
from tests.fakes.deployment import fake_vllm_deployment

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)


def wall():
    return datetime.now(timezone.utc)


@pytest.fixture
def sim_prod(tmp_path):
    settings = parse_settings('mode = "prod"\n[deployments.ws]\nscenario = "workstation-12gb-speech"\n')
    edges = deployments.build(settings)
    store = open_store(tmp_path / "log.db", create=True)
    with freeze_time(T0):
        loop.capture(store, edges["ws"], simulate(load_scenario("workstation-12gb-speech")).log_text,
                     IncidentSource(kind="simulator"), wall)
        loop.run(store, settings, edges, clock=wall)
    (promotion,) = view_as_of(store)["promotions"].waiting()
    return settings, edges, store, promotion


def test_prod_promotion_waits_and_nothing_is_written(sim_prod):
    _, _, store, promotion = sim_prod
    assert promotion.requires_approval and promotion.status == "waiting"
    assert not list(store.read(types=["BaselineCommitStarted", "PromotionNotCommitted"]))


def test_approval_after_the_ttl_is_refused_and_the_promotion_lapses(sim_prod):
    settings, _, store, promotion = sim_prod
    with freeze_time(T0 + timedelta(hours=25)), pytest.raises(EscrowError, match="lapsed"):
        approve(store, settings, promotion.promotion_id, "ana", wall())
    (lapsed,) = [r.event for r in store.read(types=["PromotionLapsed"])]
    assert lapsed.reason == "not approved within 24 h"


def test_lapse_is_recorded_by_the_clock_once(sim_prod):
    settings, edges, store, promotion = sim_prod
    with freeze_time(T0 + timedelta(hours=23)):
        assert lapse_expired(store, settings, wall()) == []
    with freeze_time(T0 + timedelta(hours=25)):  # proposed a few simulated minutes after T0
        assert lapse_expired(store, settings, wall()) == [promotion.promotion_id]
        loop.run(store, settings, edges, clock=wall)
    assert len(list(store.read(types=["PromotionLapsed"]))) == 1
    (alert,) = [r.event for r in store.read(types=["AlertRaised"]) if r.event.kind == "promotion_lapsed"]
    assert promotion.promotion_id[:8] in alert.summary


def test_a_changed_premise_refuses_the_approval(sim_prod):
    settings, _, store, promotion = sim_prod
    changed = BaselineCommitted(commit_id="by-hand", deployment="ws", version=2, path="/x.yaml", sha256="0",
                                config=promotion.previous.changed(max_num_seqs=8))
    store.append("deployment-ws", [Pending(event=changed, event_id=new_id(), occurred_at=T0)])
    with freeze_time(T0 + timedelta(hours=1)), pytest.raises(EscrowError, match="the baseline is now v2"):
        approve(store, settings, promotion.promotion_id, "ana", wall())
    assert not list(store.read(types=["PromotionApproved"]))


def test_reject_then_approve_is_refused(sim_prod):
    settings, _, store, promotion = sim_prod
    with freeze_time(T0 + timedelta(hours=1)):
        reject(store, promotion.promotion_id[:8], "bo", wall(), note="not during the launch")
        with pytest.raises(EscrowError, match="already rejected"):
            approve(store, settings, promotion.promotion_id, "ana", wall())
    assert view_as_of(store)["promotions"].by_id[promotion.promotion_id].by == "bo"


def test_an_approved_simulated_promotion_is_still_never_committed(sim_prod):
    settings, edges, store, promotion = sim_prod
    with freeze_time(T0 + timedelta(hours=1)):
        approved = approve(store, settings, promotion.promotion_id, "ana", wall(), note="ok")
        loop.run(store, settings, edges, clock=wall)
    assert approved.by == "ana" and approved.evidence_hash == promotion.evidence_hash
    assert approved.expires_at == T0 + timedelta(hours=25)
    (skipped,) = [r.event for r in store.read(types=["PromotionNotCommitted"])]
    assert "simulated" in skipped.reason


def test_prod_flow_end_to_end_with_real_canaries(tmp_path):
    """Incident -> fake-vLLM canaries -> promotion waits -> approval -> the YAML is committed."""
    config_file = tmp_path / "vllm.yaml"
    config_file.write_text("model: fake-model\ngpu-memory-utilization: 0.9\nmax-model-len: 8192\n"
                           "max-num-seqs: 16\nmax-num-batched-tokens: 2048\n")
    settings = parse_settings(fake_vllm_deployment("ws", mode="prod", keys=f'config_file = "{config_file}"\n',
                                                   env={"FAKE_VLLM_LINE_DELAY": "0"}))
    edges = deployments.build(settings)
    store = open_store(tmp_path / "log.db", create=True)
    with freeze_time(T0, tick=True):
        loop.capture(store, edges["ws"], simulate(load_scenario("workstation-12gb-speech")).log_text,
                     IncidentSource(kind="file", path="vllm.log"), wall)
        loop.run(store, settings, edges, clock=wall)
    (promotion,) = view_as_of(store)["promotions"].waiting()
    assert not promotion.simulated and promotion.requires_approval
    assert "gpu-memory-utilization: 0.9\n" in config_file.read_text()  # untouched while it waits
    with freeze_time(T0 + timedelta(hours=2)):
        approve(store, settings, promotion.promotion_id, "ana", wall())
        loop.run(store, settings, edges, clock=wall)
    written = yaml.safe_load(config_file.read_text())
    assert written["gpu-memory-utilization"] == promotion.config.gpu_memory_utilization
    assert written["model"] == "fake-model"
    types = [r.type for r in store.read(types=["BaselineCommitStarted", "BaselineCommitted", "ReloadRequested",
                                                "VerificationFinished"])]
    assert types == ["BaselineCommitStarted", "BaselineCommitted", "ReloadRequested", "VerificationFinished"]
    assert view_as_of(store)["baselines"].current("ws").version == 2
