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
(the two writes of an acquire+release: four and five statements), from a final
SELECT for the others. On MariaDB those two and the hint wait are sent as one
compound statement each (``*_BLOCK``, :func:`compound`): one statement in place
of four to six.
"""

from __future__ import annotations

from typing import Any

#: The longest key, in bytes: InnoDB's index key limit (3072 bytes with the
#: DYNAMIC row format) for the VARBINARY primary key. Keys are compared and
#: ordered as bytes; no hashing, so no two keys can collide.
MAX_KEY_BYTES = 3072

#: The server's clock in microseconds since the epoch (UTC: every connection
#: runs with time_zone '+00:00'), taken once per statement.
NOW_US = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)"

#: Per-connection settings, sent once when a connection is opened.
#: ``group_concat_max_len`` at its largest for :data:`NAMES` (the server's own default cuts at 1 KB on MySQL).
SETUP = ("SET time_zone = '+00:00', innodb_lock_wait_timeout = 5, group_concat_max_len = 4294967295; "
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

#: The names (the key after the directory) of the live entries directly under a directory, as one
#: row: (how many, their length in bytes, the names joined by '/'). One value to read where a row per
#: name costs PyMySQL a packet each (the listing of 1,000 members took 3 times as long). '/' is in no name
#: directly under a directory. Unsorted: the caller sorts them, in the same order (byte order of UTF-8
#: keys is the order of Python's str) and faster than the server's sort (1,000 names: 1.9 -> 1.5 ms).
#: A result cut short by the server (``max_allowed_packet``) is shorter than the lengths say: the
#: caller then reads the rows of :data:`NAME_ROWS`.
NAMES = (f"SELECT COUNT(*), SUM(LENGTH(e.k)), GROUP_CONCAT(SUBSTRING(e.k, %(start)s) SEPARATOR '/') "
         f"FROM {{t}}entries e WHERE e.k >= %(dir)s AND e.k < %(upper)s AND e.dir = %(dir)s "
         f"AND {ALIVE.replace('{now}', NOW_US)}")
NAME_ROWS = (f"SELECT SUBSTRING(e.k, %(start)s) FROM {{t}}entries e WHERE e.k >= %(dir)s AND e.k < %(upper)s "
             f"AND e.dir = %(dir)s AND {ALIVE.replace('{now}', NOW_US)} ORDER BY e.k")

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

#: The directory's counter before a write, its row locked (one lock order: the counter first): no row if
#: the directory has none yet.
BEFORE = "SELECT n FROM {t}counters WHERE dir = %(dir)s FOR UPDATE"

#: Results: [start, the counter before (:data:`BEFORE`), advance (insert_id: the counter), delete
#: (affected: 1 if a live entry went), commit]. The counter advances even if nothing was
#: deleted (a spurious wake-up for watchers; the counter only has to grow). The counter before tells this
#: process's pollers whether the write is the only one since they last looked (``poller.local_write``).
#: ``version`` NULL deletes at any version. The single-table DELETE, not ``DELETE e FROM ... e``: the
#: multi-table form goes through the join optimizer (measured: ~13% more server CPU per acquire+release).
DELETE = f"""START TRANSACTION;
{BEFORE};
{ADVANCE};
DELETE FROM {{t}}entries WHERE k = %(k)s AND (%(version)s IS NULL OR version = %(version)s)
  AND {ALIVE.replace('{now}', NOW_US).replace('e.owner', '{t}entries.owner')};
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

#: SEQUENTIAL that also takes the entry's wake-up hint (see :mod:`moot.backends.mysql.hints`): the named
#: lock ``%(hint)s`` followed by the seq, taken before the commit makes the entry visible (if it was made).
#: The lock is taken by the INSERT itself, in its select list: that list is evaluated only for the row the
#: INSERT makes (none if the owner session is gone), and before the COMMIT (no statement of its own).
SEQUENTIAL_HINTED = SEQUENTIAL.replace(
    "%(v)s, LAST_INSERT_ID()", "IF(GET_LOCK(CONCAT(%(hint)s, LAST_INSERT_ID()), 0) IS NULL, %(v)s, %(v)s), "
    "LAST_INSERT_ID()")

#: DELETE that then drops the entry's wake-up hint ``%(hint)s``, after the commit: a waiter woken by it
#: sees the entry gone.
DELETE_HINTED = DELETE + ";\nDO RELEASE_LOCK(%(hint)s)"

#: A waiter's blocking wait on a hint: -> [(1 if it was taken (then dropped at once), 0 on timeout,)],
#: then [(whether the watched entry still exists,)] read after the wait.
HINT_WAIT = "SELECT GET_LOCK(%s, %s), RELEASE_LOCK(%s); SELECT COUNT(*) FROM {t}entries WHERE k = %s"

#: The database's hint salt (see :mod:`moot.backends.mysql.hints`), made by the first client that needs
#: it: a row of the counters table under a directory no key can have (0xff is never in UTF-8).
HINT_SALT = ("INSERT IGNORE INTO {t}counters (dir, n) VALUES (x'ff68696e74', FLOOR(1 + RAND() * 9e18)); "
             "SELECT n FROM {t}counters WHERE dir = x'ff68696e74'")

#: Every entry under a directory with whether it lives (its owner session
#: joined, not a subquery per row), sorted by key.
ENTRIES = (f"SELECT {_FIELDS}, e.owner IS NULL OR s.expires_us > {NOW_US} FROM {{t}}entries e "
           "LEFT JOIN {t}sessions s ON s.id = e.owner "
           "WHERE e.k >= %(dir)s AND e.k < CONCAT(%(dir)s, x'ff') ORDER BY e.k")

#: SEQUENTIAL, then every entry under the directory (``enqueue``): the
#: caller drops the dead ones from the answer and, if there are any, has
#: them deleted (:data:`RECHECK`): writes in the common case stay two rows.
ENQUEUE = SEQUENTIAL + ";\n" + ENTRIES
ENQUEUE_HINTED = SEQUENTIAL_HINTED + ";\n" + ENTRIES

#: The clean-up of sessions an hour past their expiry first, then the new session: two autocommitted
#: statements, and the pool sends a batch again after a deadlock or lock wait timeout (when 1,000
#: coordinators connected at once the clean-up hit one after the INSERT had committed, and the batch
#: sent again failed on its own session id: "Duplicate entry"). In this order every statement before
#: the one that failed has an effect that repeating it keeps.
OPEN_SESSION = f"""DELETE FROM {{t}}sessions WHERE expires_us < {NOW_US} - 3600000000 LIMIT 100;
INSERT INTO {{t}}sessions (id, ttl_us, expires_us) VALUES (%s, %s, {NOW_US} + %s)"""

#: One autocommitted statement: its OK packet's affected rows (= rows matched: the connection counts found
#: rows) 0 means the session is gone.
REFRESH_SESSION = f"UPDATE {{t}}sessions SET expires_us = {NOW_US} + ttl_us WHERE id = %s AND expires_us > {NOW_US}"

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

#: The versions of the watched entries that still exist (the ``IN`` list is filled in).
VERSIONS = "SELECT k, version FROM {t}entries WHERE k IN ({marks})"

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


#: RECHECK's answer, read only (one statement): what a re-check that finds no dead entry returns, so
#: that the write transaction is sent only when there is something to remove.
RECHECK_PEEK = (f"""SELECT (SELECT COUNT(*) FROM {{t}}entries e WHERE e.k >= %(dir)s AND e.k < CONCAT(%(dir)s, x'ff')
  AND e.dir = %(dir)s AND {_DEAD.replace('@now', NOW_US)}),
  (SELECT MIN(s.expires_us) FROM {{t}}entries e JOIN {{t}}sessions s ON s.id = e.owner
  WHERE e.k >= %(dir)s AND e.k < CONCAT(%(dir)s, x'ff') AND e.dir = %(dir)s) - {NOW_US},
  (SELECT n FROM {{t}}counters WHERE dir = %(dir)s)""")


def render(statement: str, prefix: str) -> str:
    """``statement`` with its tables named (``{t}`` -> ``prefix``)."""
    return statement.replace("{t}", prefix)


# -- MariaDB: one statement per primitive ---------------------------------------------------------------
# MariaDB runs a compound statement sent by the client (``BEGIN NOT ATOMIC ... END``, since 10.1) as one
# statement: parsed once, its inner statements run as a stored procedure's do (no routine, so no CREATE
# ROUTINE privilege), and the server counts one statement (``Questions``) for it. The same transaction
# and the same lock order as the batches above; the answer is one row, selected after the COMMIT.
# MySQL has no such statement: it gets the batches.

def _block(statements: str, answer: str) -> str:
    """``statements`` (a transaction ending in COMMIT) in one compound statement that then selects ``answer``
    (``LAST_INSERT_ID()``: the counter ADVANCE set, which no later statement changes; ``moot_hit``: ROW_COUNT()
    of the write after ADVANCE, a local variable named so that it shadows no column)."""
    write, _, after = statements.partition(";\nCOMMIT")
    write = write.replace(BEFORE, BEFORE.replace(" FROM", " INTO moot_before FROM"))
    return (f"BEGIN NOT ATOMIC DECLARE moot_hit INT; DECLARE moot_before BIGINT;\n{write};\n"
            f"SET moot_hit = ROW_COUNT();\nCOMMIT{after};\n{answer};\nEND")


#: -> [(counter, rows deleted, the counter before or NULL)], then the compound statement's OK.
DELETE_BLOCK = _block(DELETE, "SELECT LAST_INSERT_ID(), moot_hit, moot_before")
DELETE_HINTED_BLOCK = _block(DELETE_HINTED, "SELECT LAST_INSERT_ID(), moot_hit, moot_before")
#: -> [(seq, rows inserted)], then (ENQUEUE) every entry under the directory as :data:`ENTRIES`.
SEQUENTIAL_BLOCK = _block(SEQUENTIAL, "SELECT LAST_INSERT_ID(), moot_hit")
ENQUEUE_BLOCK = _block(SEQUENTIAL, "SELECT LAST_INSERT_ID(), moot_hit;\n" + ENTRIES)
ENQUEUE_HINTED_BLOCK = _block(SEQUENTIAL_HINTED, "SELECT LAST_INSERT_ID(), moot_hit;\n" + ENTRIES)
#: :data:`HINT_WAIT` as one statement: -> [(taken, whether the watched entry still exists)].
HINT_WAIT_BLOCK = ("BEGIN NOT ATOMIC DECLARE moot_got INT; SET moot_got = GET_LOCK(%s, %s); DO RELEASE_LOCK(%s);\n"
                   "SELECT moot_got, (SELECT COUNT(*) FROM {t}entries WHERE k = %s);\nEND")


def compound(server: str) -> bool:
    """Whether a server (its ``VERSION()``) runs the compound statements above: MariaDB 10.1 or later."""
    if "mariadb" not in server.lower():
        return False
    major, _, rest = server.partition(".")
    minor = rest.partition(".")[0]
    return major.isdigit() and minor.isdigit() and (int(major), int(minor)) >= (10, 1)


def outcome(results: list[Any]) -> tuple[int, int]:
    """(the counter it advanced to, rows written) from the results of a SEQUENTIAL (ENQUEUE),
    batch or compound statement: the compound statement's first result is its answer row, the batch's
    first (START TRANSACTION) has none."""
    if results[0]:
        counter, written = results[0][0]
        return int(counter or 0), int(written or 0)
    return int(results[1].insert_id), int(results[2].affected)


def deleted(results: list[Any]) -> tuple[int | None, int, int]:
    """(the counter before, or None if the directory had none; the counter it advanced to; rows deleted)
    from the results of a DELETE, batch or compound statement."""
    if results[0]:
        counter, written, before = results[0][0]
        return None if before is None else int(before), int(counter or 0), int(written or 0)
    before_rows = results[1]
    return (int(before_rows[0][0]) if before_rows else None), int(results[2].insert_id), int(results[3].affected)


def hint_outcome(results: list[Any]) -> tuple[Any, Any]:
    """(GET_LOCK's answer, whether the watched entry still exists) from the results of HINT_WAIT (batch:
    ``(taken, released)`` then ``(present,)``) or HINT_WAIT_BLOCK (``(taken, present)``, then the
    statement's own OK, which has no rows)."""
    taken = results[0][0][0]
    present = [result for result in results if result][-1][0][-1]
    return taken, present


def listing(results: list[Any]) -> list[Any]:
    """The rows of ENTRIES in the results of an ENQUEUE (batch: the last result; compound statement: the
    second, before the statement's own OK)."""
    rows: list[Any] = results[1] if results[0] else results[-1]
    return rows
