"""Every error the event store raises. Messages name the file, stream or position at fault."""
from __future__ import annotations


class StoreError(Exception):
    """Base class: anything wrong with the log or its use."""


class NotASelfhealLog(StoreError):
    """The file exists but is not a selfheal log (not SQLite, empty, or another app's DB)."""


class NewerFormat(StoreError):
    """The log was written by a newer selfheal whose format this build cannot read."""


class LogMissing(StoreError):
    """No log at the path and creating one was not asked for."""


class ConcurrencyError(StoreError):
    """A stale expected_version: someone else appended to the stream first."""

    def __init__(self, stream: str, expected: int, actual: int):
        self.stream, self.expected, self.actual = stream, expected, actual
        super().__init__(
            f"stream {stream!r}: expected version {expected}, but the stream is at version {actual}"
        )


class CheckpointConflict(StoreError):
    """Another runner advanced this handler's checkpoint first; the batch was not applied."""

    def __init__(self, handler: str, expected: int, actual: int):
        self.handler, self.expected, self.actual = handler, expected, actual
        super().__init__(
            f"handler {handler!r}: checkpoint expected at position {expected}, found {actual}"
        )


class DuplicateEventConflict(StoreError):
    """A batch mixes event ids already stored with new ones: neither a retry nor a new batch."""


class StoreBusy(StoreError):
    """The database stayed locked by other writers past the retry bound."""


class UnknownEventType(StoreError):
    """A stored row names an event type (or schema version) this build does not know."""


class CorruptEvent(StoreError):
    """A stored row's body does not decode into its declared type."""


class StoreFull(StoreError):
    """The disk (or the log's size limit) is full: the write was rolled back whole (a log opened
    where the disk is full is open for reading only, and refuses every write with this)."""


class CorruptLog(StoreError):
    """The file is damaged: a page SQLite cannot read, or a row with required columns empty."""


class BodyTooLarge(StoreError):
    """An event's body is longer than the log records (and reads back): nothing was appended."""


class LogHasOtherNames(StoreError):
    """The log file has more than one name (hard links): SQLite keeps a write-ahead log, and
    selfheal a runner lock, beside each name, so two names would be two of each for one file."""


class CannotOpen(StoreError):
    """The file cannot be opened at all (not readable, not creatable), as opposed to being no
    database (NotASelfhealLog) or one that can only be read (StoreReadOnly, StoreFull)."""


class StoreReadOnly(StoreError):
    """The log can be read but not written (read-only media, file or folder): nothing was recorded."""
