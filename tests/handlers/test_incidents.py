"""The one constructor of incidents: NULs escaped, size capped head and tail, text fingerprinted."""
from __future__ import annotations

import re

from selfheal.handlers.incidents import MAX_INCIDENT_BYTES, new_incident
from selfheal.schemas.events import IncidentCaptured, IncidentSource
from selfheal.schemas.fingerprints import text_fingerprint

CANARY = IncidentSource(kind="canary", canary_id="c1")
MARKER = re.compile(r"\n\[selfheal: (\d+) bytes elided\]\n")


def _canary_log(size: int) -> str:
    """A runaway canary log: vLLM's config at the head, NUL bytes all through, its error at the tail."""
    head = "INFO 11-24 06:55:10 [api_server.py:1] vLLM API server version 0.11.0\n"
    tail = "ValueError: No available memory for the cache blocks.\n"
    line = "DEBUG 11-24 06:55:11 [core.py:1] step\x00\x00 é tokens=128\n"
    body = line * ((size - len(head) - len(tail)) // len(line.encode()))
    return head + body + tail


def test_a_3_4_mb_canary_log_with_nul_bytes_is_capped_at_1_mib():
    text = _canary_log(3_400_000)
    assert len(text.encode()) > 3_300_000 and "\x00" in text
    incident = new_incident("inc-1", "ws", CANARY, text, {"run_id": "r1"})
    raw = incident.raw_text
    assert "\x00" not in raw and "\\x00" in raw
    marker = MARKER.search(raw)
    assert marker is not None
    assert len(raw.encode()) == MAX_INCIDENT_BYTES + len(marker[0].encode())
    escaped = text.replace("\x00", "\\x00").encode()
    assert int(marker[1]) == len(escaped) - MAX_INCIDENT_BYTES
    assert raw.startswith(text[:60]) and raw.endswith("ValueError: No available memory for the cache blocks.\n")
    head, tail = raw[:marker.start()].encode(), raw[marker.end():].encode()
    assert escaped.startswith(head) and escaped.endswith(tail)  # a character cut in two is dropped, not mangled
    assert MAX_INCIDENT_BYTES // 2 - 4 < len(head) <= MAX_INCIDENT_BYTES // 2
    assert MAX_INCIDENT_BYTES // 2 - 4 < len(tail) <= MAX_INCIDENT_BYTES // 2


def test_a_short_text_is_recorded_unchanged():
    text = "ValueError: Free memory on device (8.41/11.66 GiB) on startup is less than desired GPU memory\n"
    incident = new_incident("inc-2", "ws", IncidentSource(kind="file", path="/var/log/vllm.log"), text,
                            {"environment": "e", "model": "m"})
    assert incident == IncidentCaptured(incident_id="inc-2", deployment="ws",
                                        source=IncidentSource(kind="file", path="/var/log/vllm.log"),
                                        raw_text=text, fingerprint=text_fingerprint(text),
                                        context={"environment": "e", "model": "m"})


def test_the_cap_starts_past_exactly_1_mib():
    at_cap = "x" * (MAX_INCIDENT_BYTES - 2) + "é"
    assert new_incident("i", "ws", CANARY, at_cap).raw_text == at_cap
    over = at_cap + "y"
    assert MARKER.search(new_incident("i", "ws", CANARY, over).raw_text)[1] == "1"


def test_the_fingerprint_is_of_the_recorded_text():
    for text in ("a\x00b", _canary_log(1_500_000)):
        incident = new_incident("i", "ws", CANARY, text)
        assert incident.raw_text != text
        assert incident.fingerprint == text_fingerprint(incident.raw_text) != text_fingerprint(text)


def test_pure_the_same_inputs_give_the_same_event():
    context = {"run_id": "r1"}
    a = new_incident("i", "ws", CANARY, "boom\n", context)
    context["run_id"] = "r2"
    assert a == new_incident("i", "ws", CANARY, "boom\n", {"run_id": "r1"})
    assert new_incident("i", "ws", CANARY, "boom\n").context == {}
