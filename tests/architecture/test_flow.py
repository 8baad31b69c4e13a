"""The loop is declared once (handlers.flow): these tests hold the declaration to the truth."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

from selfheal.eventstore.store import memory_store
from selfheal.handlers import flow
from selfheal.handlers.ports import DeploymentEdges
from selfheal.handlers.replay import RECORDED_PORTS, replayed_handlers
from selfheal.handlers.runtime import Activity, Reactor, Runner, UndeclaredEvent
from selfheal.schemas.config import Settings
from selfheal.schemas.events import EVENT_TYPES, IntentArchived, RunRefused
from tests.conftest import archived

README = Path(__file__).resolve().parents[2] / "README.md"
EVENTS = set(EVENT_TYPES.values())


def _subscribed() -> set[type]:
    return {t for cls in flow.LOOP for t in cls.subscribes_to}


def _emitted() -> set[type]:
    return {t for cls in flow.LOOP for t in cls.emits}


def test_every_handler_is_a_reactor_or_an_activity_with_a_name():
    names = [cls.name for cls in flow.LOOP]
    assert len(set(names)) == len(names) and all(names)
    for cls in flow.LOOP:
        assert issubclass(cls, Reactor) != issubclass(cls, Activity), cls


def test_subscriptions_and_outputs_name_real_events():
    for cls in flow.LOOP:
        assert cls.subscribes_to, f"{cls.__name__} reacts to nothing"
        unknown = [t for t in (*cls.subscribes_to, *cls.emits) if t not in EVENTS]
        assert not unknown, f"{cls.__name__} names classes that are not events: {unknown}"


def test_every_recorded_event_is_consumed_or_declared_terminal():
    consumed = _subscribed()
    dangling = [t.__name__ for t in _emitted() if t not in consumed and t not in flow.TERMINAL]
    assert not dangling, f"recorded by the loop, consumed by nothing, not declared terminal: {dangling}"
    stale = [t.__name__ for t in flow.TERMINAL if t in consumed or t not in _emitted() | set(flow.INPUTS)]
    assert not stale, f"declared terminal, but consumed or never recorded: {stale}"


def test_every_event_of_the_vocabulary_has_a_source_and_every_subscription_a_producer():
    produced = _emitted() | set(flow.INPUTS)
    assert EVENTS - produced == set(), f"events nothing records: {sorted(t.__name__ for t in EVENTS - produced)}"
    assert _subscribed() <= produced


def test_activities_are_triggered_by_recorded_requests_and_act_through_a_port():
    ports = {f.name for f in dataclasses.fields(DeploymentEdges)}
    for cls in flow.LOOP:
        if issubclass(cls, Activity):
            assert cls.port in ports, f"{cls.__name__}.port {cls.port!r} is not a DeploymentEdges field"
            assert set(cls.subscribes_to) <= _emitted(), f"{cls.__name__} must start from a request the loop records"


FORBIDDEN = re.compile(r"\.store\b|datetime\.now|time\.time|time\.monotonic|\bopen\(|subprocess|os\.kill|"
                       r"\.backend\.run|\.snapshot\(\)|selfheal\.edges")


def _reached(cls) -> dict[str, str]:
    """The source of a reactor and of every function or class of handlers/ it calls by name,
    followed through those too: a clock read in a helper counts as the reactor's."""
    sources, todo = {}, [cls]
    while todo:
        obj = todo.pop()
        name = f"{obj.__module__}.{obj.__qualname__}"
        if name in sources:
            continue
        sources[name] = inspect.getsource(obj)
        module = sys.modules[obj.__module__]
        for node in ast.walk(ast.parse(textwrap.dedent(sources[name]))):
            target = getattr(module, node.id, None) if isinstance(node, ast.Name) else None
            if (inspect.isfunction(target) or inspect.isclass(target)) and \
                    target.__module__.startswith("selfheal.handlers"):
                todo.append(target)
    return sources


def test_reactors_touch_no_store_no_clock_no_world():
    for cls in flow.LOOP:
        if issubclass(cls, Reactor):
            for name, source in _reached(cls).items():
                found = FORBIDDEN.findall(source)
                assert not found, f"reactor {cls.__name__} reaches the world through {name}: {found}"


def test_the_purity_check_follows_helpers():
    # RaiseIntent calls the module's fingerprint(); a helper that reads the clock must be seen
    assert "selfheal.handlers.intents.fingerprint" in _reached(flow.RaiseIntent)


def test_handlers_builds_the_declared_loop_in_order():
    built = flow.handlers(Settings(), {}, "dev")
    assert [type(h) for h in built] == list(flow.LOOP)


def test_replay_keeps_reactors_and_replayable_activities_only():
    kept = replayed_handlers(flow.handlers(Settings(), {}, "dev"))
    assert {type(h) for h in kept} == {cls for cls in flow.LOOP if not issubclass(cls, Activity) or cls.replayable}
    assert all(h.port in RECORDED_PORTS for h in kept if isinstance(h, Activity))


def test_the_readme_loop_table_is_the_declaration():
    text = README.read_text()
    match = re.search(r"<!-- flow:begin -->\n(.*?)\n<!-- flow:end -->", text, re.S)
    assert match, "README.md lost its <!-- flow:begin --> ... <!-- flow:end --> markers"
    assert match.group(1) == flow.table(), "regenerate: python -c 'from selfheal.handlers.flow import table; print(table())'"


class _Rogue(Reactor):
    name = "rogue"
    subscribes_to = (IntentArchived,)
    emits = (IntentArchived,)

    def react(self, event, view):
        return [("x", event.follow(RunRefused(run_id="r", intent_id="i", deployment="d", reason="no",
                                              next_allowed_at=event.occurred), "rogue"))]


def test_the_runner_refuses_an_event_a_handler_does_not_declare():
    store = memory_store()
    store.append("intent-0", [archived()])
    with pytest.raises(UndeclaredEvent, match="RunRefused"):
        Runner(store, [_Rogue()]).run_until_idle()
    assert store.last_position() == 1
