import sqlite3

from selfheal.eventstore.sqlite import SQLiteRecorder, trigger_sql
from tests.eventstore.contract import RecorderContract, SharedLogContract


class TestSQLiteRecorder(RecorderContract, SharedLogContract):
    def make_recorder(self, tmp_path, clock):
        return SQLiteRecorder(tmp_path / "log.db", create=True, clock=clock)

    def make_spec(self, tmp_path) -> str:
        SQLiteRecorder(tmp_path / "shared.db", create=True).close()
        return str(tmp_path / "shared.db")

    def raw(self, spec: str, sql: str) -> None:
        with sqlite3.connect(spec) as conn:
            conn.execute(sql)

    def tamper(self, spec: str, position: int) -> None:
        with sqlite3.connect(spec) as conn:
            conn.execute("DROP TRIGGER events_refuse_update")
            conn.execute("UPDATE events SET data = '{\"n\":0}' WHERE position = ?", (position,))
            conn.execute(trigger_sql("events_refuse_update"))
