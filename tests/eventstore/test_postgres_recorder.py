"""The recorder contract on a real PostgreSQL server (a throwaway cluster, tests/eventstore/pgcluster.py),
and what only a server shows: TRUNCATE refused, the role's privileges, the server's clock."""
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")

from selfheal.eventstore.recorder import parse_utc

from tests.eventstore.contract import RecorderContract, SharedLogContract, ev


class TestPostgresRecorder(RecorderContract, SharedLogContract):
    REFUSED = (*SharedLogContract.REFUSED, "TRUNCATE events")

    @pytest.fixture
    def recorder(self, pg_url):
        from selfheal.eventstore.postgres import PostgresRecorder

        rec = PostgresRecorder(pg_url, create=True)
        yield rec
        rec.close()

    @pytest.fixture(autouse=True)
    def _url(self, pg_url):
        self._pg_url = pg_url

    def make_spec(self, tmp_path) -> str:
        from selfheal.eventstore.postgres import PostgresRecorder

        PostgresRecorder(self._pg_url, create=True).close()
        return self._pg_url

    def raw(self, spec: str, sql: str) -> None:
        with psycopg.connect(spec, autocommit=True) as conn:
            conn.execute(sql)

    def tamper(self, spec: str, position: int) -> None:
        with psycopg.connect(spec, autocommit=True) as conn:
            conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
            conn.execute("UPDATE events SET data = '{\"n\":0}' WHERE position = %s", (position,))
            conn.execute("ALTER TABLE events ENABLE TRIGGER USER")


def _open(url, **kw):
    from selfheal.eventstore.postgres import PostgresRecorder

    return PostgresRecorder(url, **kw)


def test_a_role_with_insert_and_select_only_appends_and_verifies_and_may_not_rewrite(pg_url):
    from selfheal.eventstore.postgres_schema import grant_sql

    _open(pg_url, create=True).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE node_a LOGIN")
        for sql in grant_sql("node_a"):
            conn.execute(sql)
    as_node = pg_url.replace("postgres@", "node_a@")
    with _open(as_node) as rec:
        assert rec.append("a", [ev(1)]) == [1]  # the advisory lock needs no privilege on the table
        assert rec.acquire_lease("deployment:a", "n1", 30) == 1
        assert rec.verify().ok
    with psycopg.connect(as_node, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("GRANT UPDATE ON events TO node_a")
    with _open(as_node) as rec:
        report = rec.verify()
    assert not report.ok and "role 'node_a' may UPDATE, DELETE or TRUNCATE events" in report.first_break.problem


def test_verify_reports_a_disabled_trigger(pg_url):
    _open(pg_url, create=True).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_refuse_truncate")
    with _open(pg_url) as rec:
        report = rec.verify()
    assert not report.ok and "disabled: events_refuse_truncate" in report.first_break.problem


def test_recorded_at_is_the_servers_clock_and_never_goes_back(pg_url):
    with _open(pg_url, create=True) as rec:
        server = rec._conn.execute("SELECT clock_timestamp()").fetchone()[0]
        rec.append("a", [ev(1)])
        first = rec.get("id-1").recorded_at
        assert abs((server - parse_utc(first)).total_seconds()) < 5
        # a row recorded "in the future" (a server clock stepped back since): later rows keep its time
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
            conn.execute("UPDATE events SET recorded_at = '2999-01-01T00:00:00.000000Z'")
            conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
        rec.append("a", [ev(2)])
        assert rec.get("id-2").recorded_at == "2999-01-01T00:00:00.000000Z"


def test_opening_a_database_without_a_log_says_how_to_make_one(pg_url):
    from selfheal.eventstore.errors import LogMissing, NotASelfhealLog

    with pytest.raises(LogMissing, match="selfheal --db URL init"):
        _open(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (x int)")
    with pytest.raises(NotASelfhealLog, match="not a selfheal log"):
        _open(pg_url, create=True)


def test_a_password_never_shows_in_an_error(pg_cluster):
    from selfheal.eventstore.errors import CannotOpen

    url = f"postgresql://nobody:s3cret@127.0.0.1:{pg_cluster.port}/nodb"
    with pytest.raises(CannotOpen) as err:
        _open(url)
    assert "s3cret" not in str(err.value) and "nobody:***@" in str(err.value)


def test_snapshots_are_kept_and_verified_on_the_server_too(pg_url):
    from selfheal import projections
    from selfheal.eventstore.store import open_store
    from selfheal.projections import snapshots
    from selfheal.projections.base import View
    from tests.conftest import archived

    with open_store(pg_url, create=True) as store:
        store.append("intent-1", [archived(i) for i in range(5)])
        view = View(store, projections.registered()).catch_up()
        assert snapshots.save(view, every=1)
        fresh = View(store, projections.registered())
        assert snapshots.restore(fresh) == 5 and fresh.states == view.states
        with psycopg.connect(pg_url, autocommit=True) as conn:  # a snapshot not signed by the log's secret
            conn.execute("UPDATE view_snapshots SET data = set_byte(data, 0, get_byte(data, 0) # 1)")
        assert snapshots.restore(View(store, projections.registered())) == 0
