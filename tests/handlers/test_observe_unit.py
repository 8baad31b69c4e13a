"""The observer on its own: an IncidentCaptured in, an ObservationMade (the finding) or an
IncidentUnmatched out."""
from __future__ import annotations

from selfheal.eventstore import derived_id
from selfheal.handlers.observe import ObserveIncident
from selfheal.schemas.events import BaselineImported, IncidentCaptured, IncidentSource
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, deployment

NO_KV = ("INFO 11-24 06:55:40 [gpu_worker.py:240] the current vLLM instance can use total_gpu_memory (11.60GiB) x "
         "gpu_memory_utilization (0.80) = 9.28GiB\n"
         "INFO 11-24 06:55:48 [gpu_worker.py:298] Available KV cache memory: -0.35 GiB\n"
         "ERROR 11-24 06:55:48 [core.py:708] ValueError: No available memory for the cache blocks. Try increasing "
         "`gpu_memory_utilization` when initializing the engine.")
SHORT_NO_KV = ("ERROR 11-24 06:55:48 [core.py:708] ValueError: No available memory for the cache blocks. "
               "Try increasing `gpu_memory_utilization` when initializing the engine.")


def incident(text: str, source: IncidentSource = IncidentSource(kind="file", path="/var/log/vllm.log"),
             deployment_name: str = DEPLOYMENT) -> IncidentCaptured:
    return IncidentCaptured(incident_id="inc-1", deployment=deployment_name, source=source, raw_text=text,
                            fingerprint="sha256:x", context={"environment": ENVIRONMENT})


def observer() -> ObserveIncident:
    return ObserveIncident(deployment(), safety_buffer=0.10)


def test_a_kv_cache_error_gives_the_finding_with_its_numbers_and_seed_fix():
    given = Given(("incident-inc-1", incident(NO_KV)))
    then = given.when(observer())
    assert then.types == ["ObservationMade"] and then.streams == ["incident-inc-1"]
    obs = then.events[0]
    assert obs.observation_id == derived_id(given.last.event_id, "observe")
    assert (obs.incident_id, obs.deployment, obs.environment, obs.canary_id) == ("inc-1", DEPLOYMENT, ENVIRONMENT, None)
    finding = obs.finding
    assert (finding.kind, finding.rule, finding.action) == ("no_kv_cache_memory", "vllm.no_kv_cache_memory", "tune")
    assert finding.numbers == {"available_kv_gib": -0.35, "total_gib": 11.6, "requested_utilization": 0.8}
    assert finding.fix == {"gpu_memory_utilization": 0.85}  # 0.8 + 0.35 x 1.1 / 11.6 = 0.833, one step up
    assert finding.fix_direction["gpu_memory_utilization"] == "increase"
    assert finding.evidence and "No available memory for the cache blocks" in finding.evidence[0]
    then.caused(T0)


def test_the_seed_fix_starts_from_the_current_baseline_in_the_log():
    # the log says production now runs at 0.7, not the deployment's configured 0.8: one step up is 0.75
    baseline = BaselineImported(deployment=DEPLOYMENT, version=1, config=PRODUCTION.changed(gpu_memory_utilization=0.7),
                                source="import")
    given = Given((f"deployment-{DEPLOYMENT}", baseline), ("incident-inc-1", incident(SHORT_NO_KV)))
    assert given.when(observer()).one("ObservationMade").finding.fix == {"gpu_memory_utilization": 0.75}
    without = Given(("incident-inc-1", incident(SHORT_NO_KV)))
    assert without.when(observer()).one("ObservationMade").finding.fix == {"gpu_memory_utilization": 0.85}


def test_a_canarys_log_is_observed_with_its_canary_id():
    given = Given(("incident-inc-1", incident(SHORT_NO_KV, IncidentSource(kind="canary", canary_id="k1"))))
    assert given.when(observer()).one("ObservationMade").canary_id == "k1"


def test_an_unknown_text_is_recorded_as_unmatched():
    given = Given(("incident-inc-1", incident("INFO: Application startup complete.\nGET /health 200 OK")))
    then = given.when(observer())
    assert then.types == ["IncidentUnmatched"] and then.streams == ["incident-inc-1"]
    unmatched = then.events[0]
    assert (unmatched.incident_id, unmatched.deployment) == ("inc-1", DEPLOYMENT)
    assert unmatched.rules_version == "builtin-2"
    then.caused(T0)


def test_an_unconfigured_deployment_is_still_observed():
    given = Given(("incident-inc-1", incident(SHORT_NO_KV, deployment_name="elsewhere")))
    obs = given.when(observer()).one("ObservationMade")
    assert obs.deployment == "elsewhere" and obs.finding.kind == "no_kv_cache_memory"
