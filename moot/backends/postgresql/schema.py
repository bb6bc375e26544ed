"""The tables, sequence and functions the backend keeps in its schema, and
their creation on first use.

Every primitive that writes is one call of a function below, so it is one
round trip and one transaction (autocommit); reads are one plain SELECT.
The functions are PL/pgSQL (SECURITY INVOKER): the role that uses them needs
the table and sequence privileges listed by :func:`statements`.

Layout (``S`` is the ``schema`` option, also the NOTIFY channel)::

    S.seq       one bigint SEQUENCE: every version and every seq
    S.sessions  id, ttl_ms, expires (judged by the server's clock_timestamp())
    S.entries   key (text, "C" collation, primary key), value, version, seq,
                owner (a session id, NULL for a persistent entry)
    S.meta      the layout's version (:data:`VERSION`)

NOTIFY payloads: ``ms:owner:key`` after a write (``ms``: what the owner
session had left, empty for a deletion or a persistent entry), ``!id``
when a session ended, ``*`` for a key too long to name (every watch fires).
"""

from __future__ import annotations

import re
from typing import Any

#: The version of the layout below; a schema made by another version is
#: brought up to this one (``CREATE OR REPLACE``) on first use.
VERSION = 1

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: The SQLSTATE the functions raise when the session they need is gone.
SESSION_GONE = "MOOT1"


def valid_schema(name: str) -> bool:
    """True for a schema name the backend accepts (lower-case, unquoted SQL identifier)."""
    return bool(_NAME.fullmatch(name)) and not name.startswith("pg_")


def live(s: str) -> str:
    """True for an entry ``e`` that is persistent or whose owner session has not expired."""
    return f"(e.owner IS NULL OR EXISTS (SELECT 1 FROM {s}.sessions x WHERE x.id = e.owner " \
           "AND x.expires > clock_timestamp()))"


def live_hashed(s: str) -> str:
    """:func:`live`, checking the owners against one hashed set of every
    live session (one scan of ``sessions``) instead of an index probe per
    entry: cheaper once the entries checked are more than about a third of
    the live sessions."""
    return f"(e.owner IS NULL OR e.owner IN (SELECT x.id FROM {s}.sessions x " \
           "WHERE x.expires > clock_timestamp()))"


def queries(s: str) -> dict[str, str]:
    """The statements the backend runs on schema ``s``, by name."""
    # names: the live names directly under a directory joined by '/' (in no name): one value, not
    # a row each, unsorted (names() sorts faster than the server, in the same order: COLLATE "C");
    # with the live sessions counted (the larger of the statistics' two counts, so that statistics
    # lost in a crash do not make the table look small), for the choice of liveness check
    names = "SELECT string_agg(substr(e.key, %s), '/'), " \
            f"greatest(pg_stat_get_live_tuples('{s}.sessions'::regclass), " \
            f"(SELECT c.reltuples::bigint FROM pg_class c WHERE c.oid = '{s}.sessions'::regclass)) " \
            f"FROM {s}.entries e WHERE e.key >= %s AND e.key < %s AND strpos(substr(e.key, %s), '/') = 0 AND "
    return {
        "get": f"SELECT e.key, e.value, e.version, e.seq, e.owner FROM {s}.entries e WHERE e.key = %s "
               f"AND {live(s)}",
        # the scan function's body, inline: the planner sees the range (a function call is a
        # separate plan whose rows are materialized first: twice the server time for 1,000 rows)
        "scan": f"SELECT e.key, e.value, e.version, e.seq, e.owner FROM {s}.entries e "
                f"WHERE e.key >= %s AND e.key < %s AND {live(s)} ORDER BY e.key",
        "names": names + live(s),
        "names_hashed": names + live_hashed(s),
        "add": f"SELECT {s}.add(%s, %s, %s)",
        "sequential": f"SELECT * FROM {s}.sequential(%s, %s, %s, %s, %s)",
        "cas": f"SELECT * FROM {s}.cas(%s, %s, %s::bigint)",
        "remove": f"SELECT {s}.remove(%s, %s::bigint)",
        "open": f"INSERT INTO {s}.sessions VALUES (%s, %s::bigint, "
                "clock_timestamp() + %s::bigint * interval '1 millisecond')",
        "refresh": f"UPDATE {s}.sessions SET expires = clock_timestamp() + ttl_ms * interval '1 millisecond' "
                   "WHERE id = %s AND expires > clock_timestamp() RETURNING 1",
        "reap": f"SELECT {s}.reap(ARRAY[%s], %s)",
        "left": f"SELECT ceil(extract(epoch FROM expires - clock_timestamp()) * 1000)::bigint "
                f"FROM {s}.sessions WHERE id = %s AND expires > clock_timestamp()",
        "seen": f"SELECT extract(epoch FROM clock_timestamp() - expires)::float8 * 1000 + ttl_ms "
                f"FROM {s}.sessions WHERE id = %s AND expires > clock_timestamp()",
        "recheck": f"SELECT {s}.recheck(%s, %s, %s, %s)",
        "version": f"SELECT version FROM {s}.meta",
    }


def _functions(s: str) -> list[str]:
    alive = live(s)
    ms = "ceil(extract(epoch FROM x.expires - clock_timestamp()) * 1000)::bigint"
    return [
        # A change notice (see the module docstring); returns 1 so that it can be counted.
        f"""CREATE OR REPLACE FUNCTION {s}.note(k text, own text) RETURNS integer LANGUAGE sql AS $$
SELECT 1 FROM pg_notify('{s}', CASE WHEN length(k) > 7000 THEN '*' ELSE
  coalesce((SELECT {ms} FROM {s}.sessions x WHERE x.id = own)::text, '') || ':' || coalesce(own, '') || ':' || k
END) $$""",
        # End the sessions ``ids`` (only the expired ones unless ``force``) with
        # their entries, notifying each; returns how many of them were still alive.
        f"""CREATE OR REPLACE FUNCTION {s}.reap(ids text[], force boolean) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE gone text[]; alive integer; n integer;
BEGIN
  SELECT array_agg(id), count(*) FILTER (WHERE expires > clock_timestamp()) INTO gone, alive
    FROM (SELECT id, expires FROM {s}.sessions WHERE id = ANY(ids) AND (force OR expires <= clock_timestamp())
          ORDER BY id FOR UPDATE) locked;
  IF gone IS NULL THEN RETURN 0; END IF;
  WITH d AS (DELETE FROM {s}.entries WHERE owner = ANY(gone) RETURNING key)
    SELECT count({s}.note(d.key, NULL)) INTO n FROM d;
  DELETE FROM {s}.sessions WHERE id = ANY(gone);
  PERFORM pg_notify('{s}', '!' || g) FROM unnest(gone) g;
  RETURN alive;
END $$""",
        # The ms a live session has left, its row locked against reaping until
        # commit; raises SESSION_GONE if it is not alive. NULL for no session.
        f"""CREATE OR REPLACE FUNCTION {s}.hold(own text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE left_ms bigint;
BEGIN
  IF own IS NULL THEN RETURN NULL; END IF;
  SELECT {ms} INTO left_ms FROM {s}.sessions x WHERE x.id = own AND x.expires > clock_timestamp() FOR KEY SHARE;
  IF NOT FOUND THEN RAISE EXCEPTION 'the moot session is gone' USING ERRCODE = '{SESSION_GONE}'; END IF;
  RETURN left_ms;
END $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.scan(lo text, hi text)
RETURNS TABLE(key text, value bytea, version bigint, seq bigint, owner text) LANGUAGE sql AS $$
SELECT e.key, e.value, e.version, e.seq, e.owner FROM {s}.entries e
 WHERE e.key >= lo AND e.key < hi AND {alive} ORDER BY e.key $$""",
        # Create ``k`` unless a live entry has it; an entry of an expired
        # session is reaped (with the rest of that session) first.
        f"""CREATE OR REPLACE FUNCTION {s}.add(k text, v bytea, own text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE cur record; n bigint;
BEGIN
  PERFORM {s}.hold(own);
  SELECT e.owner, x.expires > clock_timestamp() AS alive INTO cur
    FROM {s}.entries e LEFT JOIN {s}.sessions x ON x.id = e.owner WHERE e.key = k;
  IF FOUND THEN
    IF cur.owner IS NULL OR cur.alive THEN RETURN NULL; END IF;
    PERFORM {s}.reap(ARRAY[cur.owner], false);
    DELETE FROM {s}.entries e WHERE e.key = k AND e.owner = cur.owner
       AND NOT EXISTS (SELECT 1 FROM {s}.sessions x WHERE x.id = cur.owner);
  END IF;
  n := nextval('{s}.seq');
  INSERT INTO {s}.entries VALUES (k, v, n, NULL, own) ON CONFLICT (key) DO NOTHING;
  IF NOT FOUND THEN RETURN NULL; END IF;
  PERFORM {s}.note(k, own);
  RETURN n;
END $$""",
        # A new key under ``p`` with a fresh seq; with ``listed``, then the live entries under ``p``.
        f"""CREATE OR REPLACE FUNCTION {s}.sequential(p text, hi text, v bytea, own text, listed boolean)
RETURNS TABLE(key text, value bytea, version bigint, seq bigint, owner text) LANGUAGE plpgsql AS $$
DECLARE n bigint; k text;
BEGIN
  PERFORM {s}.hold(own);
  -- one creator per prefix at a time, until commit: seqs under a prefix become
  -- visible in their order (a 64-bit hash; a collision only serializes two prefixes)
  PERFORM pg_advisory_xact_lock(hashtextextended(p, 0));
  n := nextval('{s}.seq');
  k := p || lpad(n::text, 20, '0');
  INSERT INTO {s}.entries VALUES (k, v, n, n, own);
  PERFORM {s}.note(k, own);
  RETURN QUERY SELECT k, v, n, n, own;
  IF listed THEN RETURN QUERY SELECT * FROM {s}.scan(p, hi); END IF;
END $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.cas(k text, v bytea, ver bigint)
RETURNS TABLE(version bigint, seq bigint, owner text) LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  UPDATE {s}.entries e SET value = v, version = nextval('{s}.seq')
   WHERE e.key = k AND e.version = ver AND {alive} RETURNING e.version, e.seq, e.owner INTO r;
  IF NOT FOUND THEN RETURN; END IF;
  PERFORM {s}.note(k, r.owner);
  RETURN QUERY SELECT r.version, r.seq, r.owner;
END $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.remove(k text, ver bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM {s}.entries e WHERE e.key = k AND (ver IS NULL OR e.version = ver) AND {alive};
  IF NOT FOUND THEN RETURN false; END IF;
  PERFORM {s}.note(k, NULL);
  RETURN true;
END $$""",
        # The re-check of a watched key (exact) or of the keys directly under a
        # prefix: reap the expired owners there; return the ms until the first
        # other owner than ``own`` expires, NULL if none.
        f"""CREATE OR REPLACE FUNCTION {s}.recheck(lo text, hi text, exact boolean, own text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM {s}.reap(ARRAY(SELECT DISTINCT e.owner FROM {s}.entries e JOIN {s}.sessions x ON x.id = e.owner
    WHERE e.key >= lo AND e.key < hi AND (exact OR strpos(substr(e.key, length(lo) + 1), '/') = 0)
      AND x.expires <= clock_timestamp()), false);
  RETURN (SELECT min({ms}) FROM {s}.entries e JOIN {s}.sessions x ON x.id = e.owner
    WHERE e.key >= lo AND e.key < hi AND (exact OR strpos(substr(e.key, length(lo) + 1), '/') = 0)
      AND x.id <> coalesce(own, '') AND x.expires > clock_timestamp());
END $$""",
    ]


def statements(s: str) -> list[str]:
    """Every statement that creates (or brings up to :data:`VERSION`) the
    layout in schema ``s``; each is idempotent."""
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE SEQUENCE IF NOT EXISTS {s}.seq AS bigint",
        f"CREATE TABLE IF NOT EXISTS {s}.sessions (id text COLLATE \"C\" PRIMARY KEY, ttl_ms bigint NOT NULL, "
        "expires timestamptz NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {s}.entries (key text COLLATE \"C\" PRIMARY KEY, value bytea NOT NULL, "
        "version bigint NOT NULL, seq bigint, owner text COLLATE \"C\")",
        f"CREATE INDEX IF NOT EXISTS entries_owner ON {s}.entries (owner) WHERE owner IS NOT NULL",
        f"CREATE TABLE IF NOT EXISTS {s}.meta (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
        "version integer NOT NULL)",
        *_functions(s),
        f"INSERT INTO {s}.meta (version) VALUES ({VERSION}) ON CONFLICT (one) DO UPDATE SET version = {VERSION}",
    ]


def grants(s: str, role: str) -> list[str]:
    """What a role that did not create the layout needs to use it."""
    who = '"' + role.replace('"', '""') + '"'
    return [
        f"GRANT USAGE ON SCHEMA {s} TO {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {who}",
        f"GRANT USAGE, SELECT ON SEQUENCE {s}.seq TO {who}",
    ]


def admin_script(s: str, role: str) -> str:
    """The statements an administrator runs for a role that may not create
    the layout itself, as one script."""
    return "".join(f"{statement};\n" for statement in [*statements(s), *grants(s, role)])


def installed(conn: Any, name: str, version_sql: str) -> int | None:
    """The layout version schema ``name`` holds (None if none yet), read on
    ``conn`` (a :class:`~moot.backends.postgresql.connection.Conn`)."""
    (meta,), = conn.execute(b"SELECT to_regclass(%s)::text", (f"{name}.meta",)).fetchall()
    if meta is None:
        return None
    rows = conn.execute(version_sql.encode()).fetchall()
    return int(rows[0][0]) if rows else None


def creation(conn: Any, name: str) -> list[str]:
    """The statements that make the layout in schema ``name``, read on ``conn``.
    CREATE SCHEMA IF NOT EXISTS wants CREATE on the database even when the
    schema exists: it is left out then, so that a role given a schema of its
    own (AUTHORIZATION) need not have that privilege."""
    made = statements(name)
    if conn.execute(b"SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchall():
        made = [s for s in made if not s.startswith("CREATE SCHEMA ")]
    return made
