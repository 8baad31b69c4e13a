"""The append function (eventstore/postgres_schema.py): one statement per append, and hashes
computed on the server that are exactly the ones eventstore/hashing.py computes."""
import msgspec
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")

from selfheal.eventstore.hashing import GENESIS, chain_rows  # noqa: E402
from selfheal.eventstore.recorder import AppendRequest, CheckpointAdvance, NewEvent  # noqa: E402

from tests.eventstore.contract import ev  # noqa: E402

#: text the JSON form must escape, or must not: quotes, backslashes, every control character,
#: DEL, Latin-1, the JavaScript line separators, a BOM, an astral character
NASTY = '"\\/' + "".join(map(chr, range(1, 32))) + "\x7f\xe9\u2028\u2029\ufeff\U0001f600"


def _open(url, **kw):
    from selfheal.eventstore.postgres import PostgresRecorder

    return PostgresRecorder(url, **kw)


def test_the_servers_json_strings_are_msgspecs_for_every_code_point(pg_url):
    """The server hashes to_json(text); Python hashes msgspec's JSON. Equal for every character
    (NUL aside: PostgreSQL text cannot hold it), or a row would not verify."""
    chunks = ["".join(chr(c) for c in range(start, min(start + 4096, 0x110000)) if not 0xD800 <= c < 0xE000 and c)
              for start in range(0, 0x110000, 4096)]
    with psycopg.connect(pg_url) as conn:
        served = [row[0] for row in conn.execute(
            "SELECT to_json(x)::text FROM unnest(%s::text[]) WITH ORDINALITY AS t(x, o) ORDER BY o", (chunks,))]
    encode = msgspec.json.encode
    assert served == [encode(chunk).decode() for chunk in chunks]


def test_rows_with_every_awkward_character_hash_as_python_hashes_them(pg_url):
    with _open(pg_url, create=True) as rec:
        tricky = NewEvent(event_id=f"id{NASTY}", type=f"T{NASTY}", schema_version=2, occurred_at=NASTY,
                          data=msgspec.json.encode({"text": NASTY}).decode(), correlation_id=NASTY,
                          causation_id=None)
        rec.append(f"s{NASTY}", [ev(1)])
        rec.append_many([AppendRequest(f"s{NASTY}", [tricky, ev(2)]), AppendRequest("b", [ev(3)])])
        rows = list(rec.read())
        assert rec.verify().ok
        # the rows the server wrote are the rows chain_rows makes from the same head and time
        again = chain_rows([tricky, ev(2)], f"s{NASTY}", position=1, version=1, previous=rows[0].hash,
                           recorded_at=rows[1].recorded_at)
        assert [tuple(msgspec.structs.astuple(r)) for r in rows[1:3]] == again
        first = chain_rows([ev(1)], f"s{NASTY}", position=0, version=0, previous=GENESIS,
                           recorded_at=rows[0].recorded_at)
        assert tuple(msgspec.structs.astuple(rows[0])) == first[0]


def test_an_append_is_one_statement_fence_and_checkpoints_included(pg_url):
    """One round trip: the lock, the head, the checks and the rows in one statement; a runner's
    commit of one event is one INSERT, several go to the function."""
    from selfheal.eventstore.postgres_schema import APPEND, next_event, one_event

    with _open(pg_url, create=True) as rec:
        rec.append("a", [ev(0)])
        assert rec.acquire_lease("deployment:a", "me", 30) == 1
        rec.fence["deployment:a"] = 1
        sent = _sent(rec)
        rec.append("a", [ev(1)])
        rec.append_many([AppendRequest("a", [ev(2), ev(3)]), AppendRequest("b", [ev(4)])],
                        [CheckpointAdvance("h", 0, 5)])
        rec.append_many([AppendRequest("b", [ev(5)])], [CheckpointAdvance("h", 5, 6), CheckpointAdvance("g", 0, 6)])
        rec.append_many([AppendRequest("b", [ev(6)])], [CheckpointAdvance("h", 6, 7)])
        rec.append_many([AppendRequest("b", [ev(7)])], [CheckpointAdvance("h", 7, 8), CheckpointAdvance("g", 6, 8)])
        rec.append_many([AppendRequest("b", [ev(8)])], [CheckpointAdvance("h", 8, 9), CheckpointAdvance("g", 8, 9)])
        # the second: several events; the third: g is not stored yet; the fourth and fifth look the
        # head up (the function wrote the one before), the fifth's row follows the fourth's, so
        # the last continues from the kept head
        assert sent[:2] == [one_event(False, False, False, 1), sent[1]] and APPEND in sent[1]
        assert sent[2:] == [one_event(False, False, False, 1, 2), sent[3], one_event(False, False, False, 1, 1),
                            one_event(False, False, False, 1, 2), next_event(False, False, 1, 2)] and APPEND in sent[3]
        assert rec.checkpoints() == {"g": 9, "h": 9} and rec.verify().ok


class _Spy:
    """The recorder's append cursor or its prepared single appends, noting each statement sent."""

    SENDS = ("execute", "run", "run_encoded", "run_after_lock")

    def __init__(self, sender, sent: list[str]):
        self.sender, self.sent = sender, sent

    def __getattr__(self, name):
        method = getattr(self.sender, name)
        if name not in self.SENDS:
            return method
        return lambda sql, *a, **kw: self.sent.append(sql) or method(sql, *a, **kw)


def _sent(rec) -> list[str]:
    sent = []
    execute = rec._conn.execute
    rec._conn.execute = lambda *a, **kw: sent.append(a[0]) or execute(*a, **kw)
    rec._appends, rec._calls = _Spy(rec._appends, sent), _Spy(rec._calls, sent)
    return sent


def test_one_event_without_a_fence_is_one_insert_and_the_function_tells_the_rest_apart(pg_url):
    """A single event is one INSERT, no function call: ONE_EVENT looks the head up, NEXT_EVENT
    continues from the row this recorder wrote last; what neither inserts (an empty log, a
    retry, a stale version) goes to the function, which answers."""
    from selfheal.eventstore.errors import ConcurrencyError
    from selfheal.eventstore.postgres_schema import APPEND, NEXT_PLAIN, next_event, one_event

    with _open(pg_url, create=True) as rec:
        sent = _sent(rec)
        assert rec.append("a", [ev(1)]) == [1]  # an empty log has no head row: the function starts it
        assert sent == [one_event(False, False, False), sent[1]] and APPEND in sent[1]
        sent.clear()
        assert rec.append("a", [ev(2)]) == [2] and rec.append("b", [ev(3)], expected_version=0) == [3]
        assert sent == [one_event(False, False, False), one_event(True, False, False)]
        sent.clear()
        assert rec.append("a", [ev(7)]) == [4] and rec.append("b", [ev(8)], expected_version=1) == [5]
        assert sent == [NEXT_PLAIN] * 2  # the head and both versions are this recorder's
        sent.clear()
        assert rec.append("a", [ev(2)]) == [2]  # a retry: the stored position, nothing written
        with pytest.raises(ConcurrencyError):
            rec.append("a", [ev(4)], expected_version=1)
        assert len(sent) == 4 and [APPEND in sql for sql in sent] == [False, True, False, True]
        assert rec.last_position() == 5 and rec.verify().ok
        # a sealed event's key is written by the same statement, and only with its row
        sealed = msgspec.structs.replace(ev(5), key=b"k" * 32)
        sent.clear()
        assert rec.append("a", [sealed]) == [6] and rec.event_key(sealed.event_id) == b"k" * 32
        assert sent[0] == one_event(False, False, True) and len(sent) == 2  # the insert, then event_key's read
        resealed = msgspec.structs.replace(ev(9), key=b"m" * 32)
        assert rec.append("a", [resealed]) == [7] and rec.event_key(resealed.event_id) == b"m" * 32
        assert sent[2] == one_event(False, False, True)  # the head written before was the function's
        third = msgspec.structs.replace(ev(10), key=b"n" * 32)
        assert rec.append("a", [third]) == [8] and rec.event_key(third.event_id) == b"n" * 32
        assert sent[4] == next_event(False, True)  # [7] followed [6]: this recorder appends alone
        stale = msgspec.structs.replace(ev(6), key=b"j" * 32)
        with pytest.raises(ConcurrencyError):
            rec.append("a", [stale], expected_version=0)
        assert rec.event_key(stale.event_id) is None and rec.last_position() == 8 and rec.verify().ok


def test_a_kept_head_another_writer_moved_inserts_nothing_and_the_append_looks_it_up(pg_url):
    """Two recorders taking turns on one log: a kept head goes stale, the position is found
    taken, and the append is made from the head looked up; a recorder that found another writer
    looks the head up until its rows follow each other again; positions, stream versions and the
    chain come out as if one writer had made them all."""
    from selfheal.eventstore.postgres_schema import NEXT_PLAIN, one_event

    with _open(pg_url, create=True) as a, _open(pg_url) as b:
        a.append("s", [ev(0)])
        a.append("s", [ev(100)])
        a.append("s", [ev(101)])  # follows a's own row: a appends alone, from its kept head
        b.append("s", [ev(1)])
        b.append("s", [ev(2)])
        sent = _sent(a)
        assert a.append("s", [ev(3)]) == [6]
        assert sent == [NEXT_PLAIN, one_event(False, False, False)]  # stale, then looked up
        sent.clear()
        b.append("s", [ev(102)])
        assert a.append("s", [ev(103)]) == [8] and a.append("s", [ev(104)]) == [9]  # another writer: looked up
        assert a.append("s", [ev(105)]) == [10]  # [9] followed [8]: from the kept head again
        assert sent == [one_event(False, False, False)] * 2 + [NEXT_PLAIN]
        for n in range(4, 40):
            (a if n % 3 else b).append(f"s{n % 2}", [ev(n)])
        assert [(r.stream, r.version) for r in a.read() if r.stream == "s1"] == [("s1", v) for v in range(1, 19)]
        # b appends to x between two appends of a: a's next position shows it, and a keeps no
        # version of any stream written before (x's would be stale though a's head is not, once
        # a's rows follow each other again)
        a.append("x", [ev(40)])
        b.append("x", [ev(41)])
        sent.clear()
        assert a.append("y", [ev(42)]) == [49] and a.append("y", [ev(44)]) == [50]
        assert a.append("x", [ev(43)]) == [51] and a.append("x", [ev(45)]) == [52]
        assert sent == [one_event(False, False, False)] * 3 + [NEXT_PLAIN]
        assert [r.version for r in a.read() if r.stream == "x"] == [1, 2, 3, 4]
        assert [r.version for r in a.read() if r.stream == "s"] == list(range(1, 11))
        assert a.last_position() == 52 and a.verify().ok


def test_a_function_write_drops_the_kept_head(pg_url):
    """A batch (the function) writes rows the recorder does not keep: the next single append
    looks the head up rather than continue from a head that is no longer the last row."""
    from selfheal.eventstore.postgres_schema import NEXT_PLAIN, one_event

    with _open(pg_url, create=True) as rec:
        rec.append("a", [ev(0)])
        rec.append("a", [ev(1)])
        rec.append("a", [ev(6)])
        rec.append("a", [ev(7)])  # follows its own row: the next would continue from it
        rec.append_many([AppendRequest("a", [ev(2), ev(3)])])
        sent = _sent(rec)
        assert [rec.append("a", [ev(n)]) for n in (4, 5, 8)] == [[7], [8], [9]]
        assert sent == [one_event(False, False, False)] * 2 + [NEXT_PLAIN]
        assert [r.version for r in rec.read()] == list(range(1, 10)) and rec.verify().ok


def test_rows_continued_from_the_kept_head_hash_as_python_hashes_them(pg_url):
    """NEXT_EVENT hashes the text msgspec made around recorded_at: equal to what
    eventstore/hashing.py computes from the stored row, for every awkward character, and with an
    injected clock too."""
    from selfheal.eventstore.postgres_schema import NEXT_PLAIN, next_event, one_event

    with _open(pg_url, create=True) as rec:
        for n in range(2):  # the function (an empty log), then looked up
            rec.append(f"s{NASTY}", [ev(n)])
        sent = _sent(rec)
        for n in range(2, 6):
            rec.append(f"s{NASTY}", [NewEvent(event_id=f"id{n}{NASTY}", type=f"T{NASTY}", schema_version=2,
                                              occurred_at=NASTY, data=msgspec.json.encode({"t": NASTY}).decode(),
                                              correlation_id=NASTY if n % 2 else None, causation_id=NASTY)])
        assert sent == [one_event(False, False, False)] + [NEXT_PLAIN] * 3
        rows = list(rec.read())
        for previous, row in zip(rows[1:], rows[2:]):
            again = chain_rows([NewEvent(event_id=row.event_id, type=row.type, schema_version=row.schema_version,
                                         occurred_at=row.occurred_at, data=row.data, correlation_id=row.correlation_id,
                                         causation_id=row.causation_id)], row.stream, position=previous.position,
                               version=previous.version, previous=previous.hash, recorded_at=row.recorded_at)
            assert tuple(msgspec.structs.astuple(row)) == again[0]
        assert rec.verify().ok
    from datetime import datetime, timezone

    with _open(pg_url, clock=lambda: datetime(2030, 1, 2, 3, 4, 5, 600, tzinfo=timezone.utc)) as rec:
        sent = _sent(rec)
        for n in range(10, 13):
            rec.append("c", [ev(n)])
        assert sent[-1] == next_event(True, False)
        assert [r.recorded_at for r in rec.read()][-3:] == ["2030-01-02T03:04:05.000600Z"] * 3 and rec.verify().ok


def test_a_lost_lease_writes_nothing(pg_url):
    """Whichever way the commit goes (the function, the INSERT from a looked-up head or from the
    kept one), a lease that passed to another runner refuses it whole."""
    from selfheal.eventstore.postgres import LeaseLost

    with _open(pg_url, create=True) as rec, _open(pg_url) as other:
        assert rec.acquire_lease("deployment:a", "me", 0.01) == 1
        rec.fence["deployment:a"] = 1
        for n in range(3):  # the function (an empty log), then the INSERT, looked up and kept
            rec.append_many([AppendRequest("a", [ev(n)])], [CheckpointAdvance("h", n, n + 1)])
        other._conn.execute("SELECT pg_sleep(0.05)")
        assert other.acquire_lease("deployment:a", "them", 30) == 2
        with pytest.raises(LeaseLost, match="deployment:a"):
            rec.append_many([AppendRequest("a", [ev(3)])], [CheckpointAdvance("h", 3, 4)])
        with pytest.raises(LeaseLost, match="deployment:a"):
            rec.append("b", [ev(4)])
        assert rec.last_position() == 3 and rec.checkpoints() == {"h": 3}


def test_a_log_made_before_the_function_gets_it_from_its_owner_and_a_replaced_one_is_refused(pg_url):
    from selfheal.eventstore.errors import CannotOpen, NotASelfhealLog
    from selfheal.eventstore.postgres_schema import APPEND, grant_sql

    _open(pg_url, create=True).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP FUNCTION {APPEND}")
        conn.execute("CREATE ROLE node_b LOGIN")
        for sql in grant_sql("node_b"):
            conn.execute(sql)
    with pytest.raises(CannotOpen, match="open the log once as the table's owner"):
        _open(pg_url.replace("postgres@", "node_b@"))
    with _open(pg_url) as rec:  # the owner makes it
        assert rec.append("a", [ev(1)]) == [1]
    with _open(pg_url.replace("postgres@", "node_b@")) as rec:
        assert rec.append("a", [ev(2)]) == [2] and rec.verify().ok
    with psycopg.connect(pg_url, autocommit=True) as conn:
        body = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = to_regproc(%s)", (APPEND,)).fetchone()[0]
        conn.execute(f"CREATE OR REPLACE FUNCTION {APPEND}(requests jsonb, fence jsonb, moves jsonb, forgotten text, "
                     f"clock text) RETURNS bigint[] LANGUAGE plpgsql AS $b${body.replace('IF fence', 'IF false AND fence')}$b$")
    with pytest.raises(NotASelfhealLog, match="not the one selfheal creates"):
        _open(pg_url)


def test_the_function_looks_rows_up_by_index_whatever_the_table_held_when_it_was_planned(pg_url):
    """PL/pgSQL keeps a statement's plan for the session: a lookup planned while the table was
    empty must not stay a scan of it (`= ANY(ids)` did: every append read the whole table)."""
    with _open(pg_url, create=True) as rec:
        for i in range(300):
            rec.append(f"s{i % 7}", [ev(i)])
        for i in range(300, 1300, 100):
            rec.append(f"s{i}", [ev(n) for n in range(i, i + 100)])
        rec._conn.execute("SELECT pg_stat_force_next_flush()")
    with psycopg.connect(pg_url) as conn:
        read = conn.execute("SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'events'").fetchone()[0]
    assert read == 0, f"appends scanned the events table ({read} rows read)"
