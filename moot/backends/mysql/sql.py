"""The tables and the statements: every primitive is one batch of SQL sent in one round trip.

Three InnoDB tables, named with the backend's table prefix ``{t}``
(``docs/design/mysql.md`` explains the model):

* ``{t}sessions`` -- one row per session: its TTL and its expiry, both in
  microseconds of the server's clock (``NOW(6)`` in UTC).
* ``{t}counters`` -- one row per directory (a key prefix ending in ``/``):
  its counter, advanced by every write under the directory to
  ``GREATEST(n + 1, server clock in us)``. It gives versions and ``seq``,
  orders the writes of one directory (every write transaction locks its
  row first), and is what watchers poll.
* ``{t}entries`` -- one row per key, its directory, value, version, seq and
  owner session (NULL for a persistent key).

An entry whose owner session has expired is absent to every statement
(the :data:`ALIVE` condition); the write that needs its place, and the
re-check of a watched directory, delete it in their own transaction.

Each batch that writes runs one transaction (``START TRANSACTION`` ...
``COMMIT``) and its answer is read after the ``COMMIT``, so no row lock is
held while a result is sent: from the OK packets of its statements (rows
affected, ``LAST_INSERT_ID``) for :data:`DELETE` and :data:`SEQUENTIAL`
(the two writes of an acquire+release: four statements each), from a final
SELECT for the others.
"""

from __future__ import annotations

#: The longest key, in bytes: InnoDB's index key limit (3072 bytes with the
#: DYNAMIC row format) for the VARBINARY primary key. Keys are compared and
#: ordered as bytes; no hashing, so no two keys can collide.
MAX_KEY_BYTES = 3072

#: The server's clock in microseconds since the epoch (UTC: every connection
#: runs with time_zone '+00:00'), taken once per statement.
NOW_US = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)"

#: Per-connection settings, sent once when a connection is opened.
SETUP = ("SET time_zone = '+00:00', innodb_lock_wait_timeout = 5; "
         "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
#: Sent too when the server is a Galera node: reads wait until the node has
#: applied every write the cluster committed before them (causal reads).
GALERA_SETUP = "SET SESSION wsrep_sync_wait = 1"

TABLES = (
    """CREATE TABLE IF NOT EXISTS {t}sessions (
  id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  ttl_us BIGINT NOT NULL,
  expires_us BIGINT NOT NULL,
  KEY expires (expires_us)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC""",
    """CREATE TABLE IF NOT EXISTS {t}counters (
  dir VARBINARY(3072) NOT NULL PRIMARY KEY,
  n BIGINT NOT NULL
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC""",
    """CREATE TABLE IF NOT EXISTS {t}entries (
  k VARBINARY(3072) NOT NULL PRIMARY KEY,
  dir VARBINARY(3072) NOT NULL,
  value MEDIUMBLOB NOT NULL,
  version BIGINT NOT NULL,
  seq BIGINT NULL,
  owner CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
  KEY owner (owner)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC""",
)

#: Reads nothing, fails with 1146 if a table is missing.
PROBE = "SELECT 1 FROM {t}sessions LIMIT 0; SELECT 1 FROM {t}counters LIMIT 0; SELECT 1 FROM {t}entries LIMIT 0"

_FIELDS = "e.k, e.value, e.version, e.seq, e.owner"

#: True for an entry ``e`` that is persistent or whose owner session lives (at ``now``).
ALIVE = "(e.owner IS NULL OR EXISTS (SELECT 1 FROM {t}sessions s WHERE s.id = e.owner AND s.expires_us > {now}))"
_DEAD = ("(e.owner IS NOT NULL AND NOT EXISTS "
         "(SELECT 1 FROM {t}sessions s WHERE s.id = e.owner AND s.expires_us > @now))")
_OWNER_ALIVE = "(@owner IS NULL OR EXISTS (SELECT 1 FROM {t}sessions WHERE id = @owner AND expires_us > @now))"
#: Lock the directory's counter row (made if absent) before touching its entries: one lock order for every writer.
_LOCK_DIR = "INSERT INTO {t}counters (dir, n) VALUES (@dir, 0) ON DUPLICATE KEY UPDATE n = n"
_BUMP = "UPDATE {t}counters SET n = GREATEST(n + 1, @now) WHERE dir = @dir AND {cond}"
_N = "SELECT n INTO @n FROM {t}counters WHERE dir = @dir"

GET = f"SELECT {_FIELDS} FROM {{t}}entries e WHERE e.k = %s AND {ALIVE.replace('{now}', NOW_US)}"

#: Every live entry with a key in [%s, %s), sorted by key.
LIST = (f"SELECT {_FIELDS} FROM {{t}}entries e WHERE e.k >= %s AND e.k < %s "
        f"AND {ALIVE.replace('{now}', NOW_US)} ORDER BY e.k")

#: -> (made, version, owner alive)
CREATE = f"""SET @now = {NOW_US}, @k = %s, @dir = %s, @v = %s, @owner = %s;
START TRANSACTION;
{_LOCK_DIR};
DELETE e FROM {{t}}entries e WHERE e.k = @k AND {_DEAD};
SET @gone = ROW_COUNT();
SET @alive = {_OWNER_ALIVE};
SELECT COUNT(*) INTO @taken FROM {{t}}entries WHERE k = @k;
SET @made = @alive AND @taken = 0;
{_BUMP.format(t="{t}", cond="@gone + @made > 0")};
{_N};
INSERT INTO {{t}}entries (k, dir, value, version, seq, owner)
  SELECT @k, @dir, @v, @n, NULL, @owner FROM DUAL WHERE @made;
COMMIT;
SELECT @made, @n, @alive"""

#: -> (done, version, seq, owner)
CAS = f"""SET @now = {NOW_US}, @k = %s, @dir = %s, @v = %s, @version = %s;
START TRANSACTION;
{_LOCK_DIR};
SELECT COUNT(*) INTO @hit FROM {{t}}entries e WHERE e.k = @k AND e.version = @version
  AND {ALIVE.replace('{now}', '@now')};
{_BUMP.format(t="{t}", cond="@hit > 0")};
{_N};
UPDATE {{t}}entries SET value = @v, version = @n WHERE k = @k AND @hit > 0;
SELECT seq, owner INTO @seq, @owner FROM {{t}}entries WHERE k = @k;
COMMIT;
SELECT @hit, @n, @seq, @owner"""

#: Advance the directory's counter (made if absent) and lock its row: first
#: in every write transaction (one lock order). ``LAST_INSERT_ID(expr)``
#: hands the new value back in the statement's OK packet (``insert_id``)
#: and to ``LAST_INSERT_ID()`` in the statements after it, with no SELECT.
ADVANCE = (f"INSERT INTO {{t}}counters (dir, n) VALUES (%(dir)s, LAST_INSERT_ID({NOW_US})) "
           f"ON DUPLICATE KEY UPDATE n = LAST_INSERT_ID(GREATEST(n + 1, {NOW_US}))")

#: Results: [start, advance (insert_id: the counter), delete (affected: 1 if
#: a live entry went), commit]. The counter advances even if nothing was
#: deleted (a spurious wake-up for watchers; the counter only has to grow).
#: ``version`` NULL deletes at any version.
DELETE = f"""START TRANSACTION;
{ADVANCE};
DELETE e FROM {{t}}entries e WHERE e.k = %(k)s AND (%(version)s IS NULL OR e.version = %(version)s)
  AND {ALIVE.replace('{now}', NOW_US)};
COMMIT"""

#: Results: [start, advance (insert_id: the seq), insert (affected: 0 if the
#: owner session is gone), commit]. The seq is the counter just advanced; the
#: entry is made only if its owner lives (or it has none).
SEQUENTIAL = f"""START TRANSACTION;
{ADVANCE};
INSERT INTO {{t}}entries (k, dir, value, version, seq, owner)
  SELECT CONCAT(%(dir)s, LPAD(LAST_INSERT_ID(), 20, '0')), %(dir)s, %(v)s, LAST_INSERT_ID(), LAST_INSERT_ID(),
    %(owner)s FROM DUAL
  WHERE %(owner)s IS NULL OR EXISTS (SELECT 1 FROM {{t}}sessions WHERE id = %(owner)s AND expires_us > {NOW_US});
COMMIT"""

#: Every entry under a directory with whether it lives (its owner session
#: joined, not a subquery per row), sorted by key.
ENTRIES = (f"SELECT {_FIELDS}, e.owner IS NULL OR s.expires_us > {NOW_US} FROM {{t}}entries e "
           "LEFT JOIN {t}sessions s ON s.id = e.owner "
           "WHERE e.k >= %(dir)s AND e.k < CONCAT(%(dir)s, x'ff') ORDER BY e.k")

#: SEQUENTIAL, then every entry under the directory (``enqueue``): the
#: caller drops the dead ones from the answer and, if there are any, has
#: them deleted (:data:`RECHECK`): writes in the common case stay two rows.
ENQUEUE = SEQUENTIAL + ";\n" + ENTRIES

OPEN_SESSION = f"""INSERT INTO {{t}}sessions (id, ttl_us, expires_us) VALUES (%s, %s, {NOW_US} + %s);
DELETE FROM {{t}}sessions WHERE expires_us < {NOW_US} - 3600000000 LIMIT 100"""

#: Affected (= matched: the connection counts found rows) 0 means the session is gone.
REFRESH_SESSION = (f"UPDATE {{t}}sessions SET expires_us = {NOW_US} + ttl_us WHERE id = %s AND expires_us > {NOW_US}; "
                   "SELECT ROW_COUNT()")

#: -> (was alive,): the session ends, its entries go, their directories advance.
END_SESSION = f"""SET @now = {NOW_US}, @id = %s;
START TRANSACTION;
SELECT COUNT(*) INTO @was FROM {{t}}sessions WHERE id = @id AND expires_us > @now FOR UPDATE;
DELETE FROM {{t}}sessions WHERE id = @id;
UPDATE {{t}}counters c JOIN (SELECT DISTINCT dir FROM {{t}}entries WHERE owner = @id) d ON c.dir = d.dir
  SET c.n = GREATEST(c.n + 1, @now);
DELETE FROM {{t}}entries WHERE owner = @id;
COMMIT;
SELECT @was"""

#: -> (ttl_us, us left) of a live session; no row if it is gone.
LAST_SEEN = f"SELECT ttl_us, expires_us - {NOW_US} FROM {{t}}sessions WHERE id = %s AND expires_us > {NOW_US}"

#: The counters of the watched directories (the ``IN`` list is filled in).
COUNTERS = "SELECT dir, n FROM {t}counters WHERE dir IN ({marks})"

#: Remove the dead entries directly under a directory (advancing it if any
#: went); -> (removed, us until the first owner of a live entry there expires or NULL, counter).
RECHECK = f"""SET @now = {NOW_US}, @dir = %s;
START TRANSACTION;
SELECT COUNT(*) INTO @dead FROM {{t}}entries e WHERE e.k >= @dir AND e.k < CONCAT(@dir, x'ff') AND e.dir = @dir
  AND {_DEAD};
{_BUMP.format(t="{t}", cond="@dead > 0")};
DELETE e FROM {{t}}entries e WHERE e.k >= @dir AND e.k < CONCAT(@dir, x'ff') AND e.dir = @dir AND {_DEAD}
  AND @dead > 0;
COMMIT;
SELECT @dead, (SELECT MIN(s.expires_us) FROM {{t}}entries e JOIN {{t}}sessions s ON s.id = e.owner
  WHERE e.k >= @dir AND e.k < CONCAT(@dir, x'ff') AND e.dir = @dir) - {NOW_US},
  (SELECT n FROM {{t}}counters WHERE dir = @dir)"""


def render(statement: str, prefix: str) -> str:
    """``statement`` with its tables named (``{t}`` -> ``prefix``)."""
    return statement.replace("{t}", prefix)
