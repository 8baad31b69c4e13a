"""selfheal's append-only event log."""
from selfheal.eventstore.errors import (
    CheckpointConflict, ConcurrencyError, CorruptEvent, DuplicateEventConflict, LogMissing,
    NewerFormat, NotASelfhealLog, StoreBusy, StoreError, UnknownEventType,
)
from selfheal.eventstore.recorder import Recorder, StoredEvent, VerifyReport, parse_utc, utc_iso
from selfheal.eventstore.store import EventStore, Pending, Recorded, derived_id, memory_store, new_id, open_store

__all__ = [
    "CheckpointConflict", "ConcurrencyError", "CorruptEvent", "DuplicateEventConflict", "EventStore",
    "LogMissing", "NewerFormat", "NotASelfhealLog", "Pending", "Recorded", "Recorder", "StoreBusy",
    "StoreError", "StoredEvent", "UnknownEventType", "VerifyReport", "derived_id", "memory_store",
    "new_id", "open_store", "parse_utc", "utc_iso",
]
