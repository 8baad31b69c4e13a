"""Issue 13, round two, item 2: approve and reject (and lapse) racing on one promotion.

Escrow decisions are serialised on the promotion's stream: each is appended with the version of
`promotion-ID` it read when it decided, so of two decisions made at once exactly one is
recorded, and the other is refused with "already approved/rejected/lapsed". And a rejection is
final in the promotions projection, whatever follows it in the log.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from selfheal.edges import deployments
from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.handlers.escrow import EscrowError, approve, lapse_expired, reject
from selfheal.projections import view_as_of
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import IncidentSource, PromotionApproved, PromotionRejected
from tests.conftest import T0, StepClock
from tests.handlers.given_when_then import Given, at
from tests.handlers.test_baseline_unit import imported, promotion

ROOT = Path(__file__).resolve().parents[2]
PROD = 'mode = "prod"\n[deployments.ws]\nscenario = "workstation-12gb-speech"\n'
DECISIONS = ("PromotionApproved", "PromotionRejected", "PromotionLapsed")


@pytest.fixture(scope="module")
def waiting_log(tmp_path_factory):
    """A log whose one prod promotion waits for a person."""
    path = tmp_path_factory.mktemp("escrow") / "log.db"
    settings = parse_settings(PROD)
    edges = deployments.build(settings)
    with open_store(path, create=True) as store:
        loop.capture(store, edges["ws"], simulate(load_scenario("workstation-12gb-speech")).log_text,
                     IncidentSource(kind="simulator"), StepClock())
        loop.run(store, settings, edges, clock=StepClock())
        (waiting,) = view_as_of(store)["promotions"].waiting()
    return path, waiting.promotion_id


@pytest.fixture
def log(waiting_log, tmp_path):
    path = tmp_path / "log.db"
    shutil.copy(waiting_log[0], path)
    return path, waiting_log[1]


def decisions(path: Path) -> list[str]:
    with open_store(path) as store:
        return [r.type for r in store.read(types=DECISIONS)]


def interleaved(store, other: Path, decide_there) -> None:
    """Make `store`'s next append to a promotion stream land just after `decide_there` has
    recorded its decision through another connection: the two decided on the same state."""
    append = store.append

    def late(stream, events, expected_version=None):
        if stream.startswith("promotion-") and not getattr(late, "done", False):
            late.done = True
            with open_store(other) as there:
                decide_there(there)
        return append(stream, events, expected_version)

    store.append = late


APPROVE_AT, LAPSE_AT = T0 + timedelta(hours=23), T0 + timedelta(hours=25)  # it was proposed minutes after T0


def actions(promotion_id: str) -> dict:
    settings = parse_settings(PROD)
    return {"approve": lambda s: approve(s, settings, promotion_id, "ana", APPROVE_AT),
            "reject": lambda s: reject(s, promotion_id, "bo", APPROVE_AT, note="not during the launch"),
            "lapse": lambda s: lapse_expired(s, settings, LAPSE_AT)}


@pytest.mark.parametrize("first, second, settled", [
    ("reject", "approve", "rejected"),
    ("approve", "reject", "approved"),
    ("lapse", "approve", "lapsed"),
    ("lapse", "reject", "lapsed"),
    ("reject", "lapse", "rejected"),
])
def test_of_two_decisions_made_at_once_exactly_one_is_recorded(log, first, second, settled):
    path, promotion_id = log
    act = actions(promotion_id)
    with open_store(path) as store:
        interleaved(store, path, act[first])
        if second == "lapse":  # the clock's lapse of a promotion settled meanwhile: nothing, quietly
            assert act[second](store) == []
        else:
            with pytest.raises(EscrowError, match=f"promotion {promotion_id}: already {settled}"):
                act[second](store)
    assert len(decisions(path)) == 1
    with open_store(path) as store:
        assert view_as_of(store)["promotions"].by_id[promotion_id].status == settled


def test_an_approval_lapses_only_once_it_has_expired(log):
    """An approval racing the clock's lapse, the other way round: approved first, the lapse
    (whose view still saw the promotion waiting) is decided again and finds nothing due."""
    path, promotion_id = log
    act = actions(promotion_id)
    with open_store(path) as store:
        view = view_as_of(store)  # the runner's view, before the approval lands
        interleaved(store, path, act["approve"])
        assert lapse_expired(store, parse_settings(PROD), LAPSE_AT, view) == []
    assert decisions(path) == ["PromotionApproved"]


def test_a_rejection_is_final_in_the_projection_whatever_follows_it():
    given = Given(imported(), ("promotion-p1", promotion(requires_approval=True)),
                  ("promotion-p1", PromotionRejected(promotion_id="p1", by="alice", note="too risky")),
                  ("promotion-p1", PromotionApproved(promotion_id="p1", by="bob", evidence_hash="sha256:e",
                                                     expires_at=at(24))))
    settled = given.view()["promotions"].by_id["p1"]
    assert (settled.status, settled.by, settled.note, settled.expires_at) == ("rejected", "alice", "too risky", None)


CHILD = """
import sys, time
from datetime import timedelta
from pathlib import Path
from selfheal.eventstore import open_store
from selfheal.handlers.escrow import EscrowError, approve, reject
from selfheal.schemas.config import parse_settings
from tests.conftest import T0
from tests.reliability.test_round2_races_escrow import PROD
db, promotion_id, what, ready, go = sys.argv[1:6]
store, settings, now = open_store(db), parse_settings(PROD), T0 + timedelta(hours=1)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.0002)
try:
    if what == "approve":
        approve(store, settings, promotion_id, "ana", now)
    else:
        reject(store, promotion_id, "bo", now)
    print("recorded")
except EscrowError as exc:
    print(f"refused: {exc}")
"""


def test_approve_and_reject_in_two_processes_at_once_record_one_decision(waiting_log, tmp_path):
    """Six trials of `approve` and `reject` started together (a barrier once each has opened the
    log): every time one is recorded and the other refused with what settled the promotion."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    both = []
    for trial in range(6):
        path, go = tmp_path / f"log{trial}.db", tmp_path / f"go{trial}"
        shutil.copy(waiting_log[0], path)
        ready = {what: tmp_path / f"ready{trial}-{what}" for what in ("approve", "reject")}
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), waiting_log[1], what, str(r), str(go)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for what, r in ready.items()]
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            outs.append(out.strip())
        recorded = decisions(path)
        if len(recorded) != 1:
            both.append(recorded)
        assert sorted(o.split(":")[0] for o in outs) == ["recorded", "refused"] or len(recorded) != 1, outs
        refusal = next((o for o in outs if o.startswith("refused")), "")
        settled = {"PromotionApproved": "approved", "PromotionRejected": "rejected"}.get(recorded[0], "?")
        assert len(recorded) != 1 or refusal.endswith(f"already {settled}"), (outs, recorded)
    assert both == [], f"{len(both)} of 6 trials recorded both decisions: {both}"
