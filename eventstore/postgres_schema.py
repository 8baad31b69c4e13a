"""The PostgreSQL log's tables, its append-only triggers, and what `verify` checks of them.

Why these choices (the recorder's docstring says how appends use them):
- The `events` table has the columns of StoredEvent in their order, the same names and the same
  text forms as SQLite's, so a row hashes the same on both backends and `migrate` copies a chain
  that verifies on the server as it did in the file.
- UPDATE and DELETE are refused by row triggers and TRUNCATE by a statement trigger (a row
  trigger never sees a TRUNCATE). Whoever owns the table can still disable them; that is why the
  role selfheal runs as should hold INSERT and SELECT only on `events` (`grant_sql`), and why
  `verify` reports a missing or disabled trigger and a non-owner role that may rewrite the table.
- A meta table holds what SQLite keeps in pragmas (application id, format version).
"""
from __future__ import annotations

FORMAT_VERSION = 1
APPLICATION = "selfheal"

#: trigger name -> the statement it refuses
TRIGGERS = {
    "events_refuse_update": "UPDATE",
    "events_refuse_delete": "DELETE",
    "events_refuse_truncate": "TRUNCATE",
}

FUNCTION = "selfheal_refuse_change"
_FUNCTION_BODY = ("BEGIN RAISE EXCEPTION 'selfheal: the events table is append-only: % is refused', TG_OP "
                  "USING ERRCODE = 'insufficient_privilege'; END;")


def trigger_sql(name: str) -> str:
    action = TRIGGERS[name]
    level = "STATEMENT" if action == "TRUNCATE" else "ROW"
    return f"CREATE TRIGGER {name} BEFORE {action} ON events FOR EACH {level} EXECUTE FUNCTION {FUNCTION}()"


SCHEMA = [
    "CREATE TABLE selfheal_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE events (
        position BIGINT PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL,
        version INTEGER NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL,
        occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, correlation_id TEXT, causation_id TEXT,
        data TEXT NOT NULL, hash TEXT NOT NULL, UNIQUE (stream, version))""",
    "CREATE INDEX events_type ON events (type, position)",
    "CREATE INDEX events_correlation ON events (correlation_id)",
    "CREATE INDEX events_recorded_at ON events (recorded_at)",
    f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ {_FUNCTION_BODY} $$",
    *(trigger_sql(name) for name in TRIGGERS),
    "CREATE TABLE handler_checkpoints (handler TEXT PRIMARY KEY, position BIGINT NOT NULL, updated_at TEXT)",
    "CREATE TABLE keys (name TEXT PRIMARY KEY, key BYTEA NOT NULL)",
    # a cache beside the log (projections/snapshots.py), outside the hash chain
    "CREATE TABLE view_snapshots (key TEXT PRIMARY KEY, position BIGINT NOT NULL, hash TEXT NOT NULL, "
    "data BYTEA NOT NULL)",
    # runner leases (handlers/runtime.py): the token grows on every change of holder (fencing)
    "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL, "
    "expires_at TIMESTAMPTZ NOT NULL)",
    f"INSERT INTO selfheal_meta (name, value) VALUES ('application', '{APPLICATION}'), "
    f"('format_version', '{FORMAT_VERSION}')",
]


def grant_sql(role: str) -> list[str]:
    """What the table owner runs so that `role` can run selfheal and nothing more: rows of
    `events` can be added and read, never changed (the other tables are state beside the log:
    checkpoints move, keys are forgotten, snapshots and leases are replaced)."""
    quoted = '"' + role.replace('"', '""') + '"'
    return [
        f"REVOKE ALL ON events FROM {quoted}",
        f"GRANT SELECT, INSERT ON events, selfheal_meta TO {quoted}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON handler_checkpoints, keys, view_snapshots, leases TO {quoted}",
    ]


def _normal(sql: str) -> str:
    return " ".join(sql.split()).lower()


def problems(conn) -> list[str]:
    """What is wrong with the append-only guards of the log `conn` is connected to."""
    found = {name: (enabled, definition, body) for name, enabled, definition, body in conn.execute(
        "SELECT t.tgname, t.tgenabled, pg_get_triggerdef(t.oid), p.prosrc FROM pg_trigger t "
        "JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = 'events'::regclass AND NOT t.tgisinternal")}
    missing = [name for name in TRIGGERS if name not in found]
    disabled = [name for name in TRIGGERS if name in found and found[name][0] == "D"]
    replaced = [name for name in TRIGGERS if name in found and (
        _normal(found[name][1]).replace("public.", "") != _normal(trigger_sql(name))
        or _normal(found[name][2]) != _normal(_FUNCTION_BODY))]
    foreign = sorted(name for name in found if name not in TRIGGERS)
    out = []
    if missing:
        out.append(f"append-only triggers are missing: {', '.join(missing)}")
    if disabled:
        out.append(f"append-only triggers are disabled: {', '.join(disabled)}")
    if replaced:
        out.append(f"append-only triggers were replaced (their SQL is not what selfheal creates): {', '.join(replaced)}")
    if foreign:
        out.append(f"triggers selfheal did not create are on the events table: {', '.join(foreign)}")
    role, owner, rewrite = conn.execute(
        "SELECT current_user, pg_get_userbyid(c.relowner), "
        "has_table_privilege('events', 'UPDATE') OR has_table_privilege('events', 'DELETE') "
        "OR has_table_privilege('events', 'TRUNCATE') FROM pg_class c WHERE c.oid = 'events'::regclass").fetchone()
    if role != owner and rewrite:
        out.append(f"role {role!r} may UPDATE, DELETE or TRUNCATE events: grant it SELECT and INSERT only "
                   "(README, 'A fleet on PostgreSQL')")
    return out
