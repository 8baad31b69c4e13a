"""The single append's own path (eventstore/postgres_single.py): statements prepared once and run
through libpq, the append lock and ONE_EVENT in one pipeline, NEXT_FAST after a long run of
appending alone, and what each leaves in the server's log."""
import threading
import time
from pathlib import Path

import msgspec
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")

from selfheal.eventstore import postgres_single  # noqa: E402
from selfheal.eventstore.postgres_schema import APPEND, NEXT_FAST, NEXT_PLAIN, one_event  # noqa: E402

from tests.eventstore.contract import ev  # noqa: E402
from tests.eventstore.test_postgres_append import NASTY, _open, _sent  # noqa: E402


def _server_errors(pg_cluster):
    """The ERROR lines the server logs from now on (autovacuum's own cancellations aside: the
    session's cluster serves every test's databases)."""
    log = Path(pg_cluster.root) / "server.log"
    start = log.stat().st_size
    return lambda: [line for line in log.read_bytes()[start:].decode(errors="replace").splitlines()
                    if "ERROR:" in line and "autovacuum" not in line]


def test_a_nul_in_text_is_refused_whole_never_cut_off(pg_url):
    """Text goes in binary form with its length: a NUL is refused by the server (as a C string it
    would have been cut at the NUL, and the row hashed by the server would not be the row the
    client meant), on the looked-up path and the kept-head path alike; nothing is written."""
    with _open(pg_url, create=True) as rec:
        for n in range(3):
            rec.append("a", [ev(n)])
        assert rec._single.streak  # the next append continues from the kept head
        with pytest.raises(psycopg.Error, match="0x00"):
            rec.append("a", [msgspec.structs.replace(ev(3), type="Intent\x00Archived")])
        with pytest.raises(psycopg.Error, match="0x00"):  # looked up: the failure dropped the kept head
            rec.append("a", [ev(4, event_id="id\x00-4")])
        assert rec.append("a", [ev(5)]) == [4]
        assert [r.type for r in rec.read()] == ["IntentArchived"] * 4 and rec.verify().ok


def test_statements_a_pooler_or_discard_all_dropped_are_prepared_again(pg_url):
    with _open(pg_url, create=True) as rec:
        for n in range(3):
            rec.append("a", [ev(n)])
        rec._conn.execute("DEALLOCATE ALL")
        assert rec.append("a", [ev(3)]) == [4]  # the kept head's statement
        rec._single.forget()
        rec._conn.execute("DEALLOCATE ALL")
        assert rec.append("a", [ev(4)]) == [5]  # the lock and ONE_EVENT's pipeline
        assert rec.verify().ok


def test_a_client_encoding_other_than_utf8_stores_and_hashes_the_same_text(pg_url):
    """Text is sent in the connection's encoding; the hashed text is UTF-8 whatever it is."""
    latin = "caf\xe9 na\xefve \xa7\xb5"
    with _open(pg_url + "?client_encoding=LATIN1", create=True) as rec:
        assert not rec._appends.utf8
        for n in range(5):
            rec.append(f"s{latin}", [msgspec.structs.replace(ev(n), type=f"T{latin}",
                                                             data=msgspec.json.encode({"t": latin}).decode())])
        assert rec._single.streak > 1 and rec.verify().ok
    with _open(pg_url) as rec:
        assert [r.type for r in rec.read()] == [f"T{latin}"] * 5 and rec.verify().ok


def test_an_append_that_waited_for_the_lock_inserts_from_the_head_written_meanwhile(pg_url, monkeypatch):
    """The lock and ONE_EVENT go in one pipeline, so ONE_EVENT's snapshot is taken once the lock
    is held: an append that waited for another reads the row that one wrote, one statement, no
    function call. Sent alone, ONE_EVENT read the head before it waited and inserted nothing."""
    for pipelined in (True, False):
        monkeypatch.setattr(postgres_single, "_PIPELINES", pipelined)
        with _open(pg_url, create=True) as a, _open(pg_url) as b:
            start = a.last_position()
            b.append("b", [ev(start + 1)])
            b._conn.execute("BEGIN")
            b.append("b", [ev(start + 2)])  # holds the append lock until COMMIT
            sent, done = _sent(a), []
            waiting = threading.Thread(target=lambda: done.append(a.append("a", [ev(start + 3)])))
            waiting.start()
            time.sleep(0.3)
            assert not done  # a waits for the lock
            b._conn.execute("COMMIT")
            waiting.join(10)
            statements = list(sent)
            assert done == [[start + 3]] and a.verify().ok
            if pipelined:
                assert statements == [one_event()]
            else:  # the control: a stale head, then the function
                assert statements[0] == one_event() and APPEND in statements[1]


def test_writers_taking_turns_leave_no_error_in_the_servers_log(pg_cluster, pg_url):
    """Two recorders on one log, each appending runs shorter than FAST_AFTER: a kept head that
    went stale inserts nothing (ON CONFLICT), quietly. After a run of FAST_AFTER appends alone, a
    recorder sends NEXT_FAST: another writer then costs one ERROR line, and the append lands."""
    errors = _server_errors(pg_cluster)
    with _open(pg_url, create=True) as a, _open(pg_url) as b:
        n = 0
        for turn in range(12):
            for _ in range(turn % 5 + 1):
                (a, b)[turn % 2].append(f"s{turn % 3}", [ev(n)])
                n += 1
        assert errors() == [] and a.verify().ok
        sent = _sent(a)
        for _ in range(postgres_single.FAST_AFTER + 2):
            a.append("x", [ev(n)])
            n += 1
        assert sent[-1] == NEXT_FAST and NEXT_PLAIN in sent  # quiet until the run was long enough
        b.append("x", [ev(n)])
        sent.clear()
        assert a.append("x", [ev(n + 1)]) == [n + 2]
        assert sent == [NEXT_FAST, one_event()]  # taken, then looked up
        logged = errors()
        assert len(logged) == 1 and 'unique constraint "events_pkey"' in logged[0]
        assert [r.version for r in a.read() if r.stream == "x"] == list(range(1, postgres_single.FAST_AFTER + 5))
        assert a.verify().ok


def test_after_a_quiet_spell_the_head_is_looked_up(pg_url, monkeypatch):
    """Another node may well have appended while this one was quiet: past ALONE_FOR_S since its
    last append, a recorder looks the head up rather than send a kept head that may be stale."""
    with _open(pg_url, create=True) as rec:
        for n in range(4):
            rec.append("a", [ev(n)])
        sent = _sent(rec)
        rec.append("a", [ev(4)])
        assert sent == [NEXT_PLAIN]
        monkeypatch.setattr(postgres_single, "ALONE_FOR_S", 0.0)
        rec.append("a", [ev(5)])
        assert sent == [NEXT_PLAIN, one_event()] and rec.verify().ok


def test_kept_head_rows_hash_as_python_hashes_them_past_fast_after(pg_url):
    """NEXT_FAST's rows, with every awkward character, verify as the others do."""
    with _open(pg_url, create=True) as rec:
        for n in range(postgres_single.FAST_AFTER + 6):
            rec.append(f"s{NASTY}", [msgspec.structs.replace(
                ev(n), event_id=f"id{n}{NASTY}", type=f"T{NASTY}", occurred_at=NASTY,
                data=msgspec.json.encode({"t": NASTY}).decode(), correlation_id=NASTY if n % 2 else None)])
        assert rec._single.streak > postgres_single.FAST_AFTER and rec.verify().ok
