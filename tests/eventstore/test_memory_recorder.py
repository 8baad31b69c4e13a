from selfheal.eventstore.memory import InMemoryRecorder
from tests.eventstore.contract import RecorderContract


class TestInMemoryRecorder(RecorderContract):
    def make_recorder(self, tmp_path, clock):
        return InMemoryRecorder(clock=clock)
