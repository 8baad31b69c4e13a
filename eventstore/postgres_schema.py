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

import functools
import re

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


#: what serialises appends: a transaction-level advisory lock, 'SHL1' and the events table's oid
#: (bench/postgres.py measures LOCK TABLE ... IN EXCLUSIVE MODE in its place)
LOCK_CLASS = 0x53484C31
ADVISORY_LOCK = f"PERFORM pg_advisory_xact_lock({LOCK_CLASS}, 'events'::regclass::oid::int)"
#: the append function's name carries its version: nodes running two builds of selfheal during an
#: upgrade each call their own, and a body that is not the one this build creates is refused
APPEND = "selfheal_append_v2"
#: the conflicts the function raises (class 'SH' is not one of PostgreSQL's); the detail is JSON
VERSION_CONFLICT, CHECKPOINT_CONFLICT, LEASE_LOST, DUPLICATE = "SH001", "SH002", "SH003", "SH004"

#: a row's hash in SQL, as eventstore/hashing.py computes it: sha256 of the msgspec JSON of
#: [previous hash, position, event_id, stream, version, type, schema_version, occurred_at,
#: recorded_at, correlation_id, causation_id, data]. to_json(text) escapes strings as msgspec does
#: (a test holds the two equal over every code point), integers print alike, the text is hashed
#: as UTF-8. One template for every place the server hashes a row.
_ROW_HASH = ("encode(sha256(convert_to(concat('[\"', {prev}, '\",', {pos}, ',', to_json({id}), ',', to_json({stream}), ',', "
             "{ver}, ',', to_json({type}), ',', {sv}, ',', to_json({occ}), ',', to_json({rec}), ',', "
             "coalesce(to_json({corr})::text, 'null'), ',', coalesce(to_json({caus})::text, 'null'), ',', "
             "to_json({data}), ']'), 'UTF8')), 'hex')")


def row_hash(**sql: str) -> str:
    return _ROW_HASH.format(**sql)


# One append in one round trip. Under the lock it reads the head, takes recorded_at from the
# server's clock (never before the head's), checks the fence, the checkpoint moves, each
# request's expected version and stored ids, then computes each row's hash exactly as
# eventstore/hashing.py does: sha256 of the msgspec JSON of (previous hash, columns...).
# to_json(text) escapes strings as msgspec does (tests/eventstore/test_postgres_hashing.py
# holds the two equal over every code point), integers print alike, and the text is hashed as
# UTF-8; `verify` recomputes every hash in Python, so a difference could not go unseen.
# A conflict raises: the statement's implicit transaction writes nothing.
_APPEND_BODY = """
DECLARE
    head bigint; chain text; last_at text; at text; lost text[]; n int; req jsonb; evs jsonb; e jsonb;
    stream_name text; expected bigint; version bigint; ids text[]; stored_count int; repeats boolean; got bigint;
    out bigint[] := '{}'; hashes text[]; m jsonb; i int; r int; done bigint;
BEGIN
    {lock};
    IF fence IS NOT NULL THEN
        SELECT array_agg(f.key ORDER BY f.key) INTO lost FROM jsonb_each(fence) f
            WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = f.key AND l.token = f.value::bigint);
        IF lost IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'SH003', MESSAGE = 'lease lost', DETAIL = to_json(lost)::text;
        END IF;
    END IF;
    FOR i IN 0 .. coalesce(jsonb_array_length(moves), 0) - 1 LOOP
        m := moves->i;
        got := coalesce((SELECT c.position FROM handler_checkpoints c WHERE c.handler = m->>0), 0);
        IF got <> (m->>1)::bigint THEN
            RAISE EXCEPTION USING ERRCODE = 'SH002', MESSAGE = 'checkpoint conflict',
                DETAIL = json_build_array(m->>0, (m->>1)::bigint, got)::text;
        END IF;
    END LOOP;
    IF forgotten IS NOT NULL THEN
        DELETE FROM keys WHERE name = 'event:' || forgotten;
    END IF;
    -- One event (a runner's commit, an observation): one statement reads the head and the
    -- stream's version, checks the id and the expected version, hashes and inserts. PL/pgSQL
    -- sets each of its expressions up again in every transaction, so the fewer statements an
    -- append runs, the cheaper it is. A version conflict, a retry, a stored id or an empty log
    -- (no head row) inserts nothing here and is told apart by the general path below, under the
    -- same lock.
    IF jsonb_array_length(requests) = 1 AND jsonb_array_length(requests->0->2) = 1 THEN
        INSERT INTO events
        SELECT h.position + 1, x.e->>0, x.q->>0, v.version + 1, x.e->>1, (x.e->>2)::int, x.e->>3, h.at, x.e->>4,
            x.e->>5, x.e->>6,
            @HASH_ONE@
        FROM (SELECT requests->0 AS q, requests->0->2->0 AS e) x
        CROSS JOIN LATERAL (SELECT coalesce(max(s.version), 0) AS version FROM events s WHERE s.stream = x.q->>0) v
        CROSS JOIN LATERAL (SELECT t.position, t.hash, greatest(t.recorded_at COLLATE "C", coalesce(clock,
                to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))) AS at
            FROM (SELECT l.position, l.hash, l.recorded_at FROM events l ORDER BY l.position DESC LIMIT 1) t) h
        WHERE (x.q->>1 IS NULL OR (x.q->>1)::bigint = v.version)
            AND NOT EXISTS (SELECT 1 FROM events d WHERE d.event_id = x.e->>0)
        RETURNING events.position, events.recorded_at INTO done, at;
        IF done IS NOT NULL THEN
            IF requests->0->2->0->>7 IS NOT NULL THEN
                INSERT INTO keys (name, key) VALUES ('event:' || (requests->0->2->0->>0),
                    decode(requests->0->2->0->>7, 'hex')) ON CONFLICT DO NOTHING;
            END IF;
            out := ARRAY[done];
        END IF;
    END IF;
    IF done IS NULL THEN
        SELECT h.position, h.hash, h.recorded_at INTO head, chain, last_at FROM events h ORDER BY h.position DESC LIMIT 1;
        head := coalesce(head, 0);
        chain := coalesce(chain, repeat('0', 64));
        at := coalesce(clock, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
        IF last_at COLLATE "C" > at COLLATE "C" THEN
            at := last_at;
        END IF;
        -- Loops run over indexes and branches are IFs, not CASEs: an expression without a query skips
        -- the executor, and a statement whose plan does not depend on the batch's size keeps one
        -- generic plan instead of being planned again on every call.
        -- A request: [stream, expected version or null, [[event_id, type, schema_version,
        -- occurred_at, correlation_id, causation_id, data, key as hex or null], ...]].
        FOR r IN 0 .. jsonb_array_length(requests) - 1 LOOP
            req := requests->r;
            stream_name := req->>0;
            expected := (req->>1)::bigint;
            evs := req->2;
            n := jsonb_array_length(evs);
            IF n = 1 THEN
                ids := ARRAY[evs->0->>0];
                SELECT coalesce((SELECT max(v.version) FROM events v WHERE v.stream = stream_name), 0),
                    (SELECT count(*) FROM events s WHERE s.event_id = ids[1]) INTO version, stored_count;
                repeats := false;
            ELSE
                ids := ARRAY(SELECT x->>0 FROM jsonb_array_elements(evs) x);
                version := coalesce((SELECT max(v.version) FROM events v WHERE v.stream = stream_name), 0);
                -- one index probe per id (a join or `= ANY` may be planned as a hash join over the table)
                stored_count := (SELECT count(*) FROM unnest(ids) k(id),
                    LATERAL (SELECT 1 FROM events s WHERE s.event_id = k.id LIMIT 1) s);
                repeats := (SELECT count(DISTINCT x) FROM unnest(ids) x) < n;
            END IF;
            IF stored_count = n AND NOT repeats THEN  -- a retry of a batch that landed: its positions
                out := out || ARRAY(SELECT s.position FROM unnest(ids) WITH ORDINALITY k(id, o),
                    LATERAL (SELECT s.position FROM events s WHERE s.event_id = k.id LIMIT 1) s ORDER BY k.o);
                CONTINUE;
            END IF;
            IF stored_count > 0 OR (repeats AND (expected IS NULL OR expected = version)) THEN
                RAISE EXCEPTION USING ERRCODE = 'SH004', MESSAGE = 'duplicate event ids',
                    DETAIL = json_build_array(stream_name, repeats, stored_count, n,
                        (SELECT k.id FROM unnest(ids) k(id) WHERE EXISTS (SELECT 1 FROM events s WHERE s.event_id = k.id)
                            LIMIT 1))::text;
            END IF;
            IF expected IS NOT NULL AND expected <> version THEN
                RAISE EXCEPTION USING ERRCODE = 'SH001', MESSAGE = 'version conflict',
                    DETAIL = json_build_array(stream_name, expected, version)::text;
            END IF;
            hashes := '{}';
            FOR i IN 0 .. n - 1 LOOP
                e := evs->i;
                chain := @HASH_LOOP@;
                hashes := hashes || chain;
            END LOOP;
            IF n = 1 THEN
                INSERT INTO events VALUES (head + 1, e->>0, stream_name, version + 1, e->>1, (e->>2)::int, e->>3, at, e->>4,
                    e->>5, e->>6, chain);
            ELSE
                INSERT INTO events SELECT head + k.o, k.e->>0, stream_name, version + k.o, k.e->>1, (k.e->>2)::int, k.e->>3,
                        at, k.e->>4, k.e->>5, k.e->>6, hashes[k.o]
                    FROM jsonb_array_elements(evs) WITH ORDINALITY k(e, o);
            END IF;
            IF jsonb_path_exists(evs, '$[*][7] ? (@ != null)') THEN
                INSERT INTO keys (name, key) SELECT 'event:' || (k->>0), decode(k->>7, 'hex')
                    FROM jsonb_array_elements(evs) k WHERE k->>7 IS NOT NULL ON CONFLICT DO NOTHING;
            END IF;
            FOR i IN 1 .. n LOOP
                out := out || (head + i);
            END LOOP;
            head := head + n;
        END LOOP;
    END IF;
    IF moves IS NOT NULL THEN  -- [[handler, expected, position], ...]
        INSERT INTO handler_checkpoints (handler, position, updated_at)
            SELECT k->>0, (k->>2)::bigint, at FROM jsonb_array_elements(moves) k
            ON CONFLICT (handler) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at;
    END IF;
    RETURN out;
END;
"""
# One event with no fence (postgres_single.py sends these): one prepared INSERT and no function
# call, PL/pgSQL's own cost (setting up its expressions in every transaction) being most of an
# append's server time. Each takes the append lock before its row is inserted and holds it to
# commit, as the function does, so appends are serialised alike and a tailing reader never skips.
# A statement's snapshot is taken before its lock: if another append committed meanwhile, it took
# the position this one computes. ONE_EVENT, sent where other writers append too, then inserts
# nothing: ON CONFLICT (position) DO NOTHING (one arbiter: the other unique indexes cost a probe
# each, and a stale head always shows there), so that taking turns leaves no error in the
# server's log. NEXT_EVENT, sent by a recorder appending alone, has it too, but not once the
# recorder's rows have followed each other for a while (NEXT_FAST, postgres_single.FAST_AFTER): a
# speculative insertion costs about 3 us of server time an append, and a position taken then
# fails on the primary key (one ERROR line in the server's log) as rarely as another writer
# shows up after a long spell of appending alone. A stored id (a retry) raises
# unique_violation on event_id. Whatever inserts nothing or raises goes to the append function,
# which reads a fresh head under the lock and tells the cases apart.
#
# ONE_EVENT looks the head and the stream's version up (an index probe each) and hashes the row
# with the function's expression; it returns the row's position and version, from which the
# recorder continues. The version is read once, in the head's subquery: where it was both
# inserted and compared, the planner ran it twice (two InitPlans).
_ONE_EVENT = """INSERT INTO events
SELECT h.position + 1, %(id)s::text, %(stream)s::text, h.version + 1, %(type)s::text, %(sv)s::int, %(occ)s::text, h.at,
    %(corr)s::text, %(caus)s::text, %(data)s::text,
    @HASH@
FROM (SELECT l.position, l.hash, pg_advisory_xact_lock({lock_class}, 'events'::regclass::oid::int) AS locked,
        greatest(l.recorded_at COLLATE "C", @NOW@) AS at,
        coalesce((SELECT s.version FROM events s WHERE s.stream = %(stream)s::text ORDER BY s.version DESC LIMIT 1), 0)
            AS version@CHECKS@
    FROM events l ORDER BY l.position DESC LIMIT 1) h
@WHERE@@CONFLICT@""".replace(
    "{lock_class}", str(LOCK_CLASS)).replace(
    "@HASH@", row_hash(prev="h.hash", pos="h.position + 1", id="%(id)s::text", stream="%(stream)s::text",
                       ver="h.version + 1", type="%(type)s::text", sv="%(sv)s::int", occ="%(occ)s::text", rec="h.at",
                       corr="%(corr)s::text", caus="%(caus)s::text", data="%(data)s::text"))
# NEXT_EVENT is sent where the client knows the head's position and the stream's version: the row
# its own last append wrote, while no other writer has appended since (postgres_single.py). It
# reads the row before %(pos)s by its position (one probe of the primary key, hot at its right
# edge) for the previous hash and recorded_at, and takes the rest as parameters: the version,
# and the hashed text on either side of the previous hash and recorded_at, made by msgspec from
# the parameters' own values as eventstore/hashing.py makes it; the server adds recorded_at (its
# clock, under the lock, never before the previous row's) and hashes. So the client needs
# nothing back (no RETURNING: a row description, a row and its decoding, 2-3 us an append) and
# the chain never rests on a hash or time the client kept. A head that moved shows as the
# position taken (above); `verify` hashes every row again in Python.
_NEXT_EVENT = """INSERT INTO events
SELECT %(pos)s::bigint, %(id)s::text, %(stream)s::text, %(ver)s::int, %(type)s::text, %(sv)s::int, %(occ)s::text, h.at,
    %(corr)s::text, %(caus)s::text, %(data)s::text,
    encode(sha256(convert_to('["' || h.hash || %(before)s::text || to_json(h.at)::text || %(after)s::text, 'UTF8')),
        'hex')
FROM (SELECT pg_advisory_xact_lock({lock_class}, 'events'::regclass::oid::int) AS locked, p.hash,
        greatest(p.recorded_at COLLATE "C", @NOW@) AS at@CHECKS@
    FROM events p WHERE p.position = %(pos)s::bigint - 1 OFFSET 0) h
@WHERE@@CONFLICT@""".replace("{lock_class}", str(LOCK_CLASS))
#: the append lock alone: sent before ONE_EVENT in the same transaction and round trip (a libpq
#: pipeline) where others append too, so that ONE_EVENT's snapshot is taken once the lock is held
#: and its head is the latest (postgres_single.Prepared.run_after_lock)
LOCK_STATEMENT = f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, 'events'::regclass::oid::int)"
_SERVER_NOW = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# A runner's commit (one event, its fence, its checkpoint moves) is the same INSERT, which
# inserts only where each lease %(lease<i>)s still has its token %(token<i>)s and each checkpoint
# %(handler<i>)s stands at %(from<i>)s; a CTE then moves those to %(to<i>)s, only where the row
# was inserted: all of it or nothing, as the function does it. The checks come after the append
# lock in the head's subquery (so locks are taken in the function's order) and lock the rows they
# read, the latest versions, whatever the statement's snapshot: a lease taken over while this
# append waited for the lock is seen, and its taker waits until this commits. A checkpoint not
# yet stored, a conflict or a lost lease inserts nothing: the function says which. One parameter
# per lease and move (not arrays): an array's length is unknown to a generic plan, whose cost the
# planner then puts above a custom plan's and plans the statement again at every append.
def _checks(leases: int, moves: int) -> str:
    fenced = [f"EXISTS (SELECT 1 FROM leases l WHERE l.name = %(lease{i})s::text AND l.token = %(token{i})s::bigint "
              "FOR SHARE)" for i in range(leases)]
    stand = [f"EXISTS (SELECT 1 FROM handler_checkpoints c WHERE c.handler = %(handler{i})s::text "
             f"AND c.position = %(from{i})s::bigint FOR UPDATE)" for i in range(moves)]
    return f",\n        {' AND '.join(fenced + stand)} AS checked" if fenced or stand else ""


def _moved(moves: int) -> str:
    values = ", ".join(f"(%(handler{i})s::text, %(to{i})s::bigint)" for i in range(moves))
    return (f"moved AS (UPDATE handler_checkpoints c SET position = m.position, updated_at = a.recorded_at "
            f"FROM (VALUES {values}) m(handler, position), added a WHERE c.handler = m.handler)")


def _built(sql: str, returned: str, *, clock: bool, keyed: bool, expected: bool = False, leases: int = 0,
           moves: int = 0, fast: bool = False) -> str:
    """`sql` for what the append carries, returning the columns `returned` names (nothing where
    that is empty and nothing else is written: a row inserted shows in the command's count)."""
    checks = _checks(leases, moves)
    where = ["h.version = %(expected)s::bigint"] * expected + ["h.checked"] * bool(checks)
    sql = sql.replace("@NOW@", "%(clock)s::text" if clock else _SERVER_NOW).replace("@CHECKS@", checks).replace(
        "@WHERE@", f"WHERE {' AND '.join(where)}\n" if where else "").replace(
        "@CONFLICT@", "" if fast else "ON CONFLICT (position) DO NOTHING").rstrip()
    ctes = [f"added AS ({sql})"]
    if keyed:  # a sealed event's key, written by the same statement, only where the row was
        ctes.append("sealed AS (INSERT INTO keys (name, key) SELECT 'event:' || %(id)s::text, %(key)s::bytea FROM added "
                    "ON CONFLICT DO NOTHING)")
    if moves:
        ctes.append(_moved(moves))
    if len(ctes) == 1:
        return f"{sql}\nRETURNING {returned}" if returned else sql
    # the row as the other CTEs read it (its recorded_at is a moved checkpoint's updated_at)
    ctes[0] = f"added AS ({sql}\nRETURNING position, version, recorded_at)"
    return f"WITH {', '.join(ctes)} SELECT {returned or 'position'} FROM added"


@functools.cache
def one_event(expected: bool = False, clock: bool = False, keyed: bool = False, leases: int = 0,
              moves: int = 0) -> str:
    """ONE_EVENT with a check of %(expected)s, recorded_at from %(clock)s rather than the
    server's clock, a sealed event's %(key)s, a runner's commit: built for what the append
    carries, so that no NULL parameter is sent and tested per append."""
    return _built(_ONE_EVENT, "position, version", clock=clock, keyed=keyed, expected=expected, leases=leases, moves=moves)


@functools.cache
def next_event(clock: bool = False, keyed: bool = False, leases: int = 0, moves: int = 0, fast: bool = False) -> str:
    """NEXT_EVENT for what the append carries; `fast`: without ON CONFLICT (NEXT_FAST)."""
    return _built(_NEXT_EVENT, "", clock=clock, keyed=keyed, leases=leases, moves=moves, fast=fast)


#: NEXT_EVENT with no clock, key, fence or moves: an observation appended alone; its parameters
#: go as a tuple in NEXT_ORDER, each name once, in the order they first appear
#: (postgres_single.Prepared numbers them so)
NEXT_PLAIN = next_event()
NEXT_ORDER = tuple(dict.fromkeys(re.findall(r"%\((\w+)\)s", NEXT_PLAIN)))
#: NEXT_PLAIN without ON CONFLICT, once a recorder has appended alone for a while
NEXT_FAST = next_event(fast=True)
#: the primary key's index: an INSERT that continues from a kept head which went stale fails on it
POSITION_KEY = "events_pkey"


_APPEND_BODY = _APPEND_BODY.replace("@HASH_ONE@", row_hash(
    prev="h.hash", pos="h.position + 1", id="x.e->>0", stream="x.q->>0", ver="v.version + 1", type="x.e->>1",
    sv="(x.e->>2)::int", occ="x.e->>3", rec="h.at", corr="x.e->>4", caus="x.e->>5", data="x.e->>6")).replace(
    "@HASH_LOOP@", row_hash(
        prev="chain", pos="head + 1 + i", id="e->>0", stream="stream_name", ver="version + 1 + i", type="e->>1",
        sv="(e->>2)::int", occ="e->>3", rec="at", corr="e->>4", caus="e->>5", data="e->>6"))
#: the parameters: the requests, the fence ({lease: token}) and the checkpoint moves
#: ([[handler, expected, position], ...]) as JSON (one text each, no array to build per column),
#: the event whose key is forgotten, and recorded_at from an injected clock (NULL: the server's)
APPEND_PARAMETERS = "requests jsonb, fence jsonb, moves jsonb, forgotten text, clock text"


def append_body(lock: str = ADVISORY_LOCK) -> str:
    return _APPEND_BODY.replace("{lock}", lock)


def append_function_sql(lock: str = ADVISORY_LOCK) -> str:
    # enable_seqscan off: PL/pgSQL keeps a statement's plan for the session, and a plan made while
    # the table was small (a scan of it) would stay one as the log grows; every lookup here is a
    # probe of a unique index, so forbidding the scan costs nothing when the table is small
    return (f"CREATE OR REPLACE FUNCTION {APPEND}({APPEND_PARAMETERS}) RETURNS bigint[] LANGUAGE plpgsql "
            f"SET enable_seqscan = off AS $body${append_body(lock)}$body$")


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
    body = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = to_regproc(%s)", (APPEND,)).fetchone()
    if body is not None and body[0] != append_body():
        out.append(f"the append function {APPEND} was replaced (its SQL is not what selfheal creates)")
    role, owner, rewrite = conn.execute(
        "SELECT current_user, pg_get_userbyid(c.relowner), "
        "has_table_privilege('events', 'UPDATE') OR has_table_privilege('events', 'DELETE') "
        "OR has_table_privilege('events', 'TRUNCATE') FROM pg_class c WHERE c.oid = 'events'::regclass").fetchone()
    if role != owner and rewrite:
        out.append(f"role {role!r} may UPDATE, DELETE or TRUNCATE events: grant it SELECT and INSERT only "
                   "(README, 'A fleet on PostgreSQL')")
    return out
