from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from selfheal.edges.alerts import Alert

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)


def make_alert(i: int = 0, *, at: timedelta = timedelta(0), fp: str = "fp-a",
               kind: str = "escalation", **evidence) -> Alert:
    return Alert(alert_id=f"al-{i:04d}", deployment="chat", kind=kind,
                 summary=f"no candidate passed for chat ({i})",
                 evidence=evidence or {"candidates": 6, "reason": "kv cache"},
                 raised_at=T0 + at, fingerprint=fp)


@pytest.fixture
def alert() -> Alert:
    return make_alert(1, reasons=["pre-flight: 11.2 GiB > 10.1 GiB free"], gpu={"free_gib": 10.1})
