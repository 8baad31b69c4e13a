from selfheal.eventstore.sqlite import SQLiteRecorder
from tests.eventstore.contract import RecorderContract


class TestSQLiteRecorder(RecorderContract):
    def make_recorder(self, tmp_path, clock):
        return SQLiteRecorder(tmp_path / "log.db", create=True, clock=clock)
