"""The Alert record and `group`: repeats inside the window folded with a count, others apart."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from selfheal.edges.alerts import Alert, group, to_json
from selfheal.schemas.fingerprints import alert_fingerprint as fingerprint

from .conftest import T0, make_alert

M = timedelta(minutes=1)


def test_repeats_inside_the_window_are_folded_with_count_and_first_id():
    alerts = [make_alert(1), make_alert(2, at=2 * M), make_alert(3, at=9 * M)]
    [one] = group(alerts, timedelta(minutes=10))
    assert one.alert_id == "al-0001" and one.count == 3
    assert one.raised_at == T0 and one.summary == alerts[0].summary


def test_window_is_measured_from_the_groups_first_alert_and_is_inclusive():
    alerts = [make_alert(1), make_alert(2, at=6 * M), make_alert(3, at=10 * M),
              make_alert(4, at=11 * M), make_alert(5, at=15 * M)]
    out = group(alerts, timedelta(minutes=10))
    # 0, 6, 10 fold (10 is exactly the window); 11 opens a new group that takes 15 too
    assert [(a.alert_id, a.count) for a in out] == [("al-0001", 3), ("al-0004", 2)]


def test_outside_the_window_not_folded():
    out = group([make_alert(1), make_alert(2, at=31 * M)], timedelta(minutes=30))
    assert [(a.alert_id, a.count) for a in out] == [("al-0001", 1), ("al-0002", 1)]


def test_different_fingerprints_stay_apart_and_order_follows_first_alerts():
    alerts = [make_alert(1, fp="a"), make_alert(2, at=M, fp="b"), make_alert(3, at=2 * M, fp="a"),
              make_alert(4, at=3 * M, fp="b"), make_alert(5, at=4 * M, fp="c")]
    out = group(alerts, timedelta(hours=1))
    assert [(a.fingerprint, a.alert_id, a.count) for a in out] == [
        ("a", "al-0001", 2), ("b", "al-0002", 2), ("c", "al-0005", 1)]


def test_deterministic_whatever_the_input_order_and_input_untouched():
    rng = random.Random(7)
    alerts = [make_alert(i, at=timedelta(seconds=rng.randrange(0, 7200)), fp=rng.choice("xyz"))
              for i in range(200)]
    before = [to_json(a) for a in alerts]
    expected = group(alerts, timedelta(minutes=15))
    for seed in range(5):
        shuffled = alerts[:]
        random.Random(seed).shuffle(shuffled)
        assert group(shuffled, timedelta(minutes=15)) == expected
    assert [to_json(a) for a in alerts] == before
    assert sum(a.count for a in expected) == 200
    firsts = [(a.raised_at, a.alert_id) for a in expected]
    assert firsts == sorted(firsts)


def test_regrouping_grouped_deliveries_keeps_totals():
    alerts = [make_alert(i, at=i * M) for i in range(10)]
    once = group(alerts, timedelta(minutes=3))
    assert [a.count for a in once] == [4, 4, 2]
    assert sum(a.count for a in group(once, timedelta(hours=1))) == 10


def test_empty_and_negative_window():
    assert group([], timedelta(minutes=5)) == []
    with pytest.raises(ValueError, match="window"):
        group([make_alert()], timedelta(seconds=-1))


def test_alert_times_are_aware_utc_and_summary_one_line():
    with pytest.raises(ValueError, match="timezone-aware"):
        Alert(alert_id="x", deployment="d", kind="k", summary="s", evidence={},
              raised_at=datetime(2026, 1, 1), fingerprint="f")
    paris = timezone(timedelta(hours=1))
    a = Alert(alert_id="x", deployment="d", kind="k", summary="line one\nline two", evidence={},
              raised_at=datetime(2026, 1, 1, 7, tzinfo=paris), fingerprint="f")
    assert a.raised_at == datetime(2026, 1, 1, 6, tzinfo=timezone.utc)
    assert a.raised_at.utcoffset() == timedelta(0)
    assert a.summary == "line one line two"


def test_alert_json_round_trips_and_is_frozen(alert):
    data = to_json(alert)
    assert b"\n" not in data
    assert msgspec.json.decode(data, type=Alert) == alert
    assert msgspec.json.decode(data)["raised_at"] == "2026-11-24T06:00:00Z"
    with pytest.raises(AttributeError):
        alert.count = 2


def test_fingerprint_is_stable_and_discriminating():
    assert fingerprint("chat", "escalation", "kv") == fingerprint("chat", "escalation", "kv")
    assert fingerprint("chat", "escalation", "kv") != fingerprint("code", "escalation", "kv")
    assert fingerprint("chat", "escalation", "kv") != fingerprint("chat", "rolled_back", "kv")
