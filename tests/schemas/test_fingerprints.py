"""One text fingerprint, one encoding: the values already in logs stay what they were."""
from __future__ import annotations

import hashlib

from hypothesis import given, strategies as st

from selfheal.handlers.intents import fingerprint
from selfheal.schemas.fingerprints import parts_fingerprint, text_fingerprint
from selfheal.schemas.serving import ServingConfig
from selfheal.schemas.upcasting import upcast


def test_pinned_values():
    assert text_fingerprint("hello") == "sha256:2cf24dba5fb0a30e"
    assert text_fingerprint("hello", prefix="fp:") == "fp:2cf24dba5fb0a30e"
    assert text_fingerprint("") == "sha256:e3b0c44298fc1c14"


@given(st.text())
def test_equals_the_encodings_used_before_on_storable_text(text):
    # st.text() holds no lone surrogates: like every text the log's JSON can hold
    for errors in ("strict", "replace", "surrogatepass"):
        assert text_fingerprint(text) == "sha256:" + hashlib.sha256(text.encode("utf-8", errors)).hexdigest()[:16]


def test_lone_surrogates_neither_raise_nor_collide():
    assert text_fingerprint("a\udcffb") != text_fingerprint("a?b")
    assert text_fingerprint("a\udcffb") != text_fingerprint("a\udcfeb")


def test_upcast_v1_incident_fingerprints_its_text():
    body = upcast("IncidentCaptured", 1, {"incident_id": "i", "deployment": "d", "text": "hello"}, 2)
    assert body["fingerprint"] == "sha256:2cf24dba5fb0a30e" and body["raw_text"] == "hello"


def test_intent_fingerprint_is_pinned():
    # the value logs already hold for this failure of this config (computed by the code before
    # the fingerprint was shared): any change to it, or to what it hashes, breaks dedupe of old intents
    config = ServingConfig(gpu_memory_utilization=0.9, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=2048)
    assert fingerprint("ws", "no_kv_cache_memory", "vllm.no_kv_cache_memory", config) == "fp:a04a9a6079064283"


def test_parts_fingerprints_keep_the_values_alerts_and_environments_had():
    # the formula the alert and environment fingerprints used before they shared this one
    before = "alert:" + hashlib.sha256("\x1f".join(["chat", "escalation", "seed"]).encode()).hexdigest()[:16]
    assert parts_fingerprint("chat", "escalation", "seed", prefix="alert:") == before
    assert parts_fingerprint("a", "bc", prefix="env:") != parts_fingerprint("ab", "c", prefix="env:")
