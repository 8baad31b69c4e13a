"""Every event type has its own line in a timeline (cli/describe.py): an event added to the
vocabulary without one would show only its type name, as CanaryPredicted once did. Each type is
built with the smallest values its fields take (msgspec's own type information), so a new event
is covered the day it is declared."""
from __future__ import annotations

import msgspec
import pytest

from cli.describe import describe
from selfheal.eventstore.store import Recorded
from selfheal.schemas.events import EVENT_TYPES


def _value(t):
    """A value of msgspec type `t`: the first choice a Literal, a union or a struct offers."""
    i = msgspec.inspect
    if isinstance(t, i.UnionType):
        return _value(next((x for x in t.types if not isinstance(x, i.NoneType)), t.types[0]))
    if isinstance(t, i.LiteralType):
        return t.values[0]
    if isinstance(t, (i.StrType,)):
        return "x1234567"
    if isinstance(t, (i.IntType, i.FloatType)):
        return 1
    if isinstance(t, i.BoolType):
        return True
    if isinstance(t, (i.ListType, i.TupleType, i.VarTupleType, i.SetType, i.FrozenSetType)):
        return []
    if isinstance(t, i.DictType):
        return {}
    if isinstance(t, i.StructType):
        return {f.encode_name: _value(f.type) for f in t.fields if f.required}
    if isinstance(t, i.NoneType):
        return None
    if isinstance(t, i.DateTimeType):
        return "2026-12-06T00:00:00Z"
    return None


def _recorded(cls) -> Recorded:
    info = msgspec.inspect.type_info(cls)
    event = msgspec.convert(_value(info), cls)
    return Recorded(position=1, event_id="e" * 8, stream="s", version=1, occurred_at="2026-12-06T00:00:00Z",
                    recorded_at="2026-12-06T00:00:00Z", correlation_id=None, causation_id=None, event=event)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_type_has_a_line_of_its_own(name):
    line = describe(_recorded(EVENT_TYPES[name]))
    assert line and line != name
