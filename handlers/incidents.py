"""The one constructor of incidents: raw text as the log keeps it, and its fingerprint.

Every incident is built here, whether a log, a metric symptom or a canary's own output: its
secrets are redacted first (`redact`, the store's redactor: the fingerprint is then the same
for two incidents that carry the same key, and reveals neither), the text's NUL characters are written as the four characters ``\\x00`` (SQLite and terminals treat
NUL badly), a text over MAX_INCIDENT_BYTES keeps its head and tail around an elision marker
(so a runaway log cannot bloat the store; vLLM's error is at the end and its config at the
start), and the fingerprint is that of the text as recorded. Pure: the caller gives the ids,
and the time goes on the event's envelope, not here.
"""
from __future__ import annotations

from collections.abc import Callable

from selfheal.schemas.events import IncidentCaptured, IncidentSource
from selfheal.schemas.fingerprints import text_fingerprint

#: incidents larger than this keep their head and tail, so a runaway log cannot bloat the store
MAX_INCIDENT_BYTES = 1 << 20


def bounded(text: str) -> str:
    """`text` if its UTF-8 fits MAX_INCIDENT_BYTES, else its first and last half of that, with
    a line between them saying how many bytes were left out (a character cut in two is dropped)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_INCIDENT_BYTES:
        return text
    half = MAX_INCIDENT_BYTES // 2
    head = data[:half].decode("utf-8", "ignore")
    tail = data[-half:].decode("utf-8", "ignore")
    return f"{head}\n[selfheal: {len(data) - 2 * half} bytes elided]\n{tail}"


def new_incident(incident_id: str, deployment: str, source: IncidentSource, text: str,
                 context: dict[str, str] | None = None, *,
                 redact: Callable[[str], str] = str) -> IncidentCaptured:
    """An IncidentCaptured of `text` as the log records it: secrets redacted, NULs escaped,
    size capped, fingerprinted."""
    recorded = bounded(redact(text).replace("\x00", "\\x00"))
    return IncidentCaptured(incident_id=incident_id, deployment=deployment, source=source, raw_text=recorded,
                            fingerprint=text_fingerprint(recorded),
                            context={k: redact(v) for k, v in (context or {}).items()})
