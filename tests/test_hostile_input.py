"""Hostile input, by property-based tests on every backend.

Whatever a caller passes as a name, an option or capabilities, moot either
does exactly what it does for ordinary input, identically on every backend,
or raises a typed :class:`moot.MootError` at once. After each refused call
the engine itself (read through a second coordinator in the test's
namespace) holds nothing: no lock entry, no group, no member, no key.

Examples are derandomized (the same on every run, so a red CI run replays)
and few enough per test that the file runs in seconds per backend.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import moot
from moot import names, values
from moot.url import parse_url
from tests.conftest import TEST_TTL, Connect

#: How long a refused call may take: it must fail before any I/O.
AT_ONCE = 1.0
#: Bound for operations that must succeed on a healthy local engine.
BOUND = 10.0
#: Shortest heartbeat, reconnect backoff or per-call timeout that means
#: anything: below it a heartbeat or backoff is a busy loop on the engine, and
#: a timeout runs out before any engine can answer (a ConnectionLost, i.e. a
#: retryable error, for input that can never work).
MIN_PERIOD = 0.01
#: A per-call timeout below this is legitimate but may honestly run out on a
#: busy machine: connecting with it may raise ConnectionLost.
SHORT_TIMEOUT = 2.0

# Client libraries' threads (kazoo's retry jitter) use the random module while hypothesis draws.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning")

ENGINE_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    report_multiple_bugs=False,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
PURE_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)

_unique = itertools.count()
Pair = tuple[moot.Coordinator, moot.Coordinator]


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_unique)}"


# -- what is left on the engine ----------------------------------------------------------------
def leftovers(checker: moot.Coordinator) -> dict[str, object]:
    """What the engine holds in the checker's namespace, read three ways."""
    left: dict[str, object] = {}
    keys = [entry.key for entry in checker.backend.list(checker.key(""))]
    if keys:
        left["keys"] = keys
    if checker.locks():
        left["locks"] = checker.locks()
    groups = checker.groups()
    if groups:
        left["groups"] = {name: sorted(checker.group(name).members()) for name in groups}
    return left


def assert_clean(checker: moot.Coordinator) -> None:
    left = leftovers(checker)
    assert not left, f"left behind on the engine: {left}"


def heartbeats() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "moot-heartbeat")


@pytest.fixture
def pair(connect: Connect) -> tuple[moot.Coordinator, moot.Coordinator]:
    """Two coordinators in the test's namespace, one to act and one to check,
    shared by every example of the test (hypothesis runs its body many times)."""
    return connect(), connect()


def refused(call: Any, *errors: type[BaseException]) -> BaseException:
    """Run ``call``; it must raise one of ``errors`` within AT_ONCE seconds."""
    started = time.monotonic()
    with pytest.raises(errors) as caught:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < AT_ONCE, f"refused after {elapsed:.2f}s, not at once"
    assert isinstance(caught.value, moot.MootError)
    return caught.value


# -- names ---------------------------------------------------------------------------------
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
ANY_CHAR = st.one_of(st.characters(), SURROGATES, st.sampled_from("/.%\x00\\ \n*?:~-_\u200b\ufeff"))
SPECIAL_NAMES = ["", "/", "..", ".", "../..", "a/../../b", "\x00", "a\x00b", "%", "%2F", "%%", " ", "~",
                 ".d", "q", "meta", "members", "x.d", "\ud800", "a\udfffb", "\U0001f600", "é" * 128, "é" * 129,
                 "a" * 256, "a" * 257, "\U0001f600" * 64, "\U0001f600" * 65, "/" * 86, "/" * 85]
NAMES = st.one_of(
    st.sampled_from(SPECIAL_NAMES),
    st.text(ANY_CHAR, max_size=40),
    st.builds(lambda piece, count: piece * count, st.sampled_from(["a", "é", "/", "\x00", "\U0001f600", "%.."]),
              st.integers(min_value=1, max_value=300)),
    st.none(), st.integers(), st.binary(max_size=8), st.just(["lock"]),
)


def valid_name(name: object) -> bool:
    """The documented rule (moot.names), written out independently."""
    if not isinstance(name, str) or not name:
        return False
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return False
    return len(name.encode("utf-8")) <= 256


@pytest.mark.timeout(300)
@ENGINE_SETTINGS
@given(name=NAMES)
def test_any_name_works_everywhere_or_is_refused_at_once(connect: Connect, pair: Pair, name: object) -> None:
    a, b = pair
    event("refused" if not valid_name(name) else "long" if len(name.encode()) > 200 else "valid")  # type: ignore[union-attr]
    if not valid_name(name):
        refused(lambda: a.lock(name), moot.InvalidName)  # type: ignore[arg-type]
        refused(lambda: a.lock_info(name), moot.InvalidName)  # type: ignore[arg-type]
        refused(lambda: a.group(name), moot.InvalidName)  # type: ignore[arg-type]
        refused(lambda: a.election(name), moot.InvalidName)  # type: ignore[arg-type]
        refused(lambda: a.rwlock(name), moot.InvalidName)  # type: ignore[arg-type]
        if name is not None:  # member_id=None means "the default id"
            refused(lambda: a.group(unique("g"), member_id=name), moot.InvalidName)  # type: ignore[arg-type]
            threads = heartbeats()
            refused(lambda: connect(member_id=name), moot.InvalidName)
            assert heartbeats() == threads
        assert_clean(b)
        return
    assert isinstance(name, str)
    # A lock by that name: taken, seen under the same name from another client, released.
    lock = a.lock(name)
    assert lock.acquire(timeout=BOUND)
    info = b.lock_info(name)
    assert info is not None and info.name == name and info.holder == a.member_id
    assert [i.name for i in b.locks()] == [name]
    lock.release()
    assert b.lock_info(name) is None
    # A group by that name, joined under that member id.
    group = a.group(name, member_id=name)
    group.join({"name": name})
    assert b.groups() == [name]
    seen = b.group(name).members()
    assert list(seen) == [name] and seen[name].capabilities == {"name": name}
    assert b.group(name).is_up(name)
    assert group.leave()
    b.group(name).delete()
    # An election by that name.
    election = a.election(name)
    assert election.campaign(timeout=BOUND)
    assert b.election(name).leader() == a.member_id
    election.resign()
    # A coordinator whose member id is that name: other clients see it as the holder.
    c = connect(member_id=name)
    held = c.lock(unique("by-member"))
    assert held.acquire(timeout=BOUND)
    assert b.lock_info(held.name).holder == name  # type: ignore[union-attr]
    held.release()
    c.close()
    assert_clean(b)


# -- capabilities ----------------------------------------------------------------------------
LIMIT = values.MAX_CAPABILITIES_BYTES
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**4400, max_value=10**4400 + 1),
    st.floats(), st.text(ANY_CHAR, max_size=12),
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(ANY_CHAR, max_size=8), inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans()), inner, min_size=1, max_size=2),
    ),
    max_leaves=24,
)


def nested(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def sized_text(total: int) -> str:
    return "x" * max(0, total - 2)  # a JSON string carries two quotes


def sized_bytes(total: int) -> bytes:
    return b"\x00" * max(0, (total - len(b'{"__moot_bytes__": ""}')) // 2)


CAPABILITIES = st.one_of(
    JSON_LIKE,
    st.binary(max_size=64),
    st.builds(bytearray, st.binary(max_size=8)),
    st.builds(nested, st.one_of(st.integers(min_value=28, max_value=36), st.sampled_from([100, 999, 5000])),
              st.sampled_from(["list", "dict"])),
    st.builds(sized_text, st.integers(min_value=LIMIT - 2, max_value=LIMIT + 2)),
    st.builds(sized_bytes, st.integers(min_value=LIMIT - 2, max_value=LIMIT + 2)),
    st.just("x" * (8 * LIMIT)),
    st.just({values.BYTES_MARKER: "00"}),
    st.just({values.BYTES_MARKER: "00", "other": 1}),
    st.just({"set": {1, 2}}), st.just(object()), st.just([b"nested bytes"]), st.just(1j),
)


REFUSED = st.one_of(
    st.builds(nested, st.integers(min_value=33, max_value=40), st.sampled_from(["list", "dict"])),
    st.builds(sized_text, st.integers(min_value=LIMIT + 1, max_value=LIMIT + 4)),
    st.builds(lambda leaf, key: {key: [leaf]}, st.sampled_from([math.nan, math.inf, -math.inf, "\ud800", {1: 2}]),
              st.text(max_size=4)),
    st.just({values.BYTES_MARKER: "00"}), st.just(object()), st.just([b"nested bytes"]),
)


def acceptable(value: Any) -> bool:
    """The documented rule (moot.values), written out independently."""
    if isinstance(value, bytes | bytearray):
        return len(json.dumps({values.BYTES_MARKER: bytes(value).hex()})) <= LIMIT
    if isinstance(value, dict) and set(value) == {values.BYTES_MARKER}:
        return False
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in item):
            return False
        if isinstance(item, list | tuple | dict):
            if depth > values.MAX_DEPTH:
                return False
            if isinstance(item, dict):
                if not all(isinstance(k, str) for k in item):
                    return False
                todo.extend((k, depth) for k in item)
                todo.extend((v, depth + 1) for v in item.values())
            else:
                todo.extend((v, depth + 1) for v in item)
        elif not (item is None or isinstance(item, bool | int | float | str)):
            return False
    try:
        return len(json.dumps(value)) <= LIMIT
    except ValueError:  # an int too long to print
        return False


def typed(value: Any) -> Any:
    """``value`` with every type spelled out (so 1, 1.0 and True differ)."""
    if isinstance(value, bytes | bytearray):
        return ("bytes", bytes(value))
    if isinstance(value, list | tuple):
        return ("list", [typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


@pytest.mark.timeout(300)
@ENGINE_SETTINGS
@given(capabilities=CAPABILITIES)
def test_any_capabilities_round_trip_or_are_refused_at_once(pair: Pair, capabilities: Any) -> None:
    a, b = pair
    name = unique("caps")
    group = a.group(name)
    event("round trip" if acceptable(capabilities) else "refused")
    if not acceptable(capabilities):
        error = refused(lambda: group.join(capabilities), moot.InvalidArgument)
        assert "capabilities" in str(error) and len(str(error)) < 1000
        assert_clean(b)
        return
    group.join(capabilities)
    for seen in (b.group(name).members()[a.member_id], b.group(name).member(a.member_id),
                 group.members()[a.member_id]):
        assert typed(seen.capabilities) == typed(capabilities)
        assert abs(seen.joined_at - time.time()) < 60
    group.leave()
    group.delete()
    assert_clean(b)


@pytest.mark.timeout(300)
@ENGINE_SETTINGS
@given(capabilities=REFUSED)
def test_refused_update_leaves_the_member_as_it_was(pair: Pair, capabilities: Any) -> None:
    a, b = pair
    name = unique("update")
    group = a.group(name)
    group.join({"before": [1, 2.5, "x"]})
    refused(lambda: group.update_capabilities(capabilities), moot.InvalidArgument)
    assert b.group(name).member(a.member_id).capabilities == {"before": [1, 2.5, "x"]}
    group.leave()
    group.delete()
    assert_clean(b)


@pytest.mark.parametrize(("capabilities", "why"), [
    (nested(33, "list"), "nested more than 32 levels"),
    (nested(100_000, "dict"), "nested more than 32 levels"),  # was a RecursionError
    ({"load": math.nan}, "NaN and infinities"),  # was stored as NaN, which other clients' JSON refuses
    ({"limits": [1, math.inf]}, "NaN and infinities"),
    ({1: "one"}, "keys must be str"),  # was stored as "1"
    ({"name": "\udc80"}, "lone surrogate"),
    ("x" * values.MAX_VALUE_BYTES, f"the limit is {LIMIT} bytes"),  # was ConnectionLost on ZooKeeper
    (b"\x00" * (LIMIT // 2), f"the limit is {LIMIT} bytes"),
    ({"set": {1}}, "capabilities['set'] is a set"),
    ({values.BYTES_MARKER: "00"}, "reserved for bytes"),  # would come back as b"\x00"
])
def test_refused_capabilities_say_why(pair: Pair, capabilities: Any, why: str) -> None:
    a, b = pair
    error = refused(lambda: a.group(unique("why")).join(capabilities), moot.InvalidArgument)
    assert why in str(error)
    assert_clean(b)


FOREIGN_RECORDS = st.one_of(
    st.binary(max_size=48),
    st.sampled_from([
        b"", b"null", b"[]", b'"text"', b"{}", b'{"joined_at": 1}', b"\xff\xfe\x00", b"[" * 100_000,
        b'{"capabilities": ' + b"[" * 100_000 + b"]" * 100_000 + b', "joined_at": 1}',
        b'{"capabilities": {"__moot_bytes__": "zz"}, "joined_at": 1}',
        b'{"capabilities": {"__moot_bytes__": 7}, "joined_at": 1}',
        b'{"capabilities": 1, "joined_at": "yesterday"}',
        b'{"capabilities": 1, "joined_at": 1' + b"0" * 400 + b"}",
        b'{"capabilities": 1' + b"1" * 5000 + b', "joined_at": 1}',
        b'{"capabilities": NaN, "joined_at": Infinity}',
        b'{"capabilities": {"a": [1, 2]}, "joined_at": 12.5}',
    ]),
)


@pytest.mark.timeout(300)
@ENGINE_SETTINGS
@given(raw=FOREIGN_RECORDS)
def test_members_never_fail_on_a_record_another_client_wrote(pair: Pair, raw: bytes) -> None:
    """Another (buggy) client's member record: members() and member() still
    answer; what cannot be decoded comes back as a RawValue of the stored bytes."""
    a, b = pair
    name = unique("foreign")
    a.group(name).create()
    key = a.key("group", names.segment(name), "members", names.segment("buggy"))
    assert a.backend.create(key, raw, ephemeral=True) is not None
    for member in (b.group(name).members()["buggy"], b.group(name).member("buggy")):
        if isinstance(member.capabilities, values.RawValue):
            assert member.capabilities.raw == raw
            assert len(repr(member.capabilities)) < 300
        assert isinstance(member.joined_at, float) and math.isfinite(member.joined_at)
    if raw == b'{"capabilities": {"a": [1, 2]}, "joined_at": 12.5}':
        assert member.capabilities == {"a": [1, 2]} and member.joined_at == 12.5
    assert a.group(name).remove("buggy")
    a.group(name).delete()
    assert_clean(b)


# -- options -----------------------------------------------------------------------------
NUMERIC_OPTIONS = ["ttl", "timeout", "heartbeat", "initial_reconnect_backoff", "max_reconnect_backoff"]
OPTION_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20), st.just(10**5000),
    st.floats(), st.floats(min_value=0.0, max_value=1e-3), st.floats(min_value=0.05, max_value=1.5),
    st.text(max_size=8),
    st.sampled_from(["10", "2.5", " 1 ", "1e12", "-1", "nan", "inf", "-inf", "0x10", "", "1_0", "0.5",
                     "3600", "3600.001", "1e-300", "True", "none"]),
    st.binary(max_size=4), st.lists(st.integers(), max_size=2), st.just(float("-0.0")),
)


def number(value: object) -> float | None:
    """The number an option value means, None if it means none."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        result = float(value)
    except (ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def must_work(option: str, value: object, ttl: float) -> bool:
    """Values that are plainly fine (the test's other options are defaults)."""
    if option == "namespace":
        return valid_name(value)
    seconds = number(value)
    if seconds is None:
        return False
    if option == "ttl":
        return 0.5 <= seconds <= 3600
    if option == "heartbeat":
        return 0.05 <= seconds <= ttl / 2
    if option == "initial_reconnect_backoff":
        return 0.05 <= seconds <= 1.0
    if option == "timeout":
        return SHORT_TIMEOUT <= seconds <= 3600
    return 0.5 <= seconds <= 3600  # max_reconnect_backoff


def must_fail(option: str, value: object) -> bool:
    """Values no option can mean."""
    if option == "namespace":
        return not valid_name(value)
    seconds = number(value)
    return seconds is None or seconds < MIN_PERIOD or seconds > 3600 or (option == "ttl" and seconds < 0.5)


def check_connected(coord: moot.Coordinator) -> None:
    """A coordinator that accepted hostile options is sane and works."""
    try:
        assert 0.5 <= coord.ttl <= 3600
        assert 0 < coord.timeout <= 3600
        assert MIN_PERIOD <= coord.heartbeat_interval < coord.ttl, "a shorter heartbeat is a busy loop"
        assert MIN_PERIOD <= coord.session.initial_reconnect_backoff <= 3600, "a shorter backoff is a busy loop"
        assert MIN_PERIOD <= coord.session.max_reconnect_backoff <= 3600, "a shorter backoff is a busy loop"
        if coord.timeout >= SHORT_TIMEOUT:
            lock = coord.lock(unique("opt"))
            assert lock.acquire(timeout=BOUND)
            lock.release()
            assert not coord.backend.list(coord.key(""))
    finally:
        coord.close()


def try_options(open_one: Any, option: str, value: object, ttl: float, checker: moot.Coordinator) -> None:
    threads = heartbeats()
    started = time.monotonic()
    try:
        coord = open_one()
    except (moot.InvalidURL, moot.InvalidName, moot.InvalidArgument) as exc:
        assert time.monotonic() - started < AT_ONCE, "refused, but not at once"
        assert not must_work(option, value, ttl), f"{option}={value!r} refused: {exc}"
        assert heartbeats() == threads
        assert_clean(checker)
        return
    except moot.ConnectionLost:
        seconds = number(value)
        if option != "timeout" or seconds is None or not MIN_PERIOD <= seconds < SHORT_TIMEOUT:
            raise
        assert time.monotonic() - started < seconds + AT_ONCE
        assert heartbeats() == threads
        assert_clean(checker)
        return
    assert not must_fail(option, value), f"{option}={value!r} accepted"
    check_connected(coord)


@pytest.mark.timeout(300)
@ENGINE_SETTINGS
@given(option=st.sampled_from([*NUMERIC_OPTIONS, "namespace"]),
       value=st.one_of(OPTION_VALUES, NAMES))
@example(option="ttl", value=True)  # was accepted as 1 s
@example(option="ttl", value=1e12)  # killed the heartbeat and watchdog with OverflowError
@example(option="ttl", value=0.001)  # lost its own locks at once
@example(option="ttl", value=3600)  # ZooKeeper grants less: the margin must shrink with the grant
@example(option="namespace", value=None)  # became "None"
@example(option="timeout", value=1e-9)  # ConnectionLost (retryable) for a value that can never work
@example(option="heartbeat", value=1e-5)  # a busy loop of renewals
@example(option="initial_reconnect_backoff", value=1e-9)  # a busy loop of reconnections
@example(option="max_reconnect_backoff", value=1e-9)
def test_any_option_value_connects_or_is_refused_at_once(connect: Connect, pair: Pair, option: str,
                                                        value: object) -> None:
    _, checker = pair
    try_options(lambda: connect(**{option: value}), option, value, TEST_TTL, checker)


@pytest.mark.timeout(300)
@ENGINE_SETTINGS
@given(option=st.sampled_from([*NUMERIC_OPTIONS, "namespace"]),
       value=st.one_of(st.text(max_size=12), st.sampled_from(["10", "2.5", "0.5", "1e12", "nan", "3600"])))
def test_any_option_in_the_url_query_connects_or_is_refused_at_once(
        url: str, namespace: str, pair: Pair, option: str, value: str) -> None:
    _, checker = pair
    query = urllib.parse.urlencode({option: value})
    keywords = {} if option == "namespace" else {"namespace": namespace}
    try_options(lambda: moot.connect(f"{url}?{query}", **keywords), option, value, 10.0, checker)


# -- URLs (no engine needed) ---------------------------------------------------------------
SCHEMES = st.sampled_from(["", "memory://", "file://", "redis://", "rediss://", "redis+sentinel://",
                           "zookeeper://", "kazoo://", "etcd://", "etcd3+https://", "nope://", "REDIS://"])
URL_TAILS = st.text(st.one_of(st.characters(), st.sampled_from(":@/?&=#[],%.0123456789²٣")), max_size=40)


@PURE_SETTINGS
@given(scheme=SCHEMES, tail=URL_TAILS,
       password=st.text(st.one_of(st.characters(), st.sampled_from(":@/?#&=%[]")), min_size=1, max_size=8),
       escape=st.booleans())
def test_any_url_parses_or_is_refused_with_invalid_url(scheme: str, tail: str, password: str,
                                                      escape: bool) -> None:
    """A URL parses or raises InvalidURL (never another error), and no piece
    of a password it carries (escaped or not) is ever shown."""
    secret = "PW-" + (urllib.parse.quote(password, safe="") if escape else password)
    for text in (scheme + tail, f"{scheme}user:{secret}@{tail}"):
        try:
            parsed = parse_url(text)
            shown = parsed.redacted() + repr(parsed)
        except moot.InvalidURL as exc:
            shown = str(exc)
        if text.count("PW-") == 1 and "PW-" not in tail:
            assert "PW-" not in shown


# -- every backend's own options, and booleans (no engine needed: made, never connected) ---------
BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False,
                 "1": True, "0": False}
BACKEND_URLS = ["file:///tmp/moot-hostile", "redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0",
                "redis+sentinel://127.0.0.1:1/mymaster", "zookeeper://127.0.0.1:1", "etcd://127.0.0.1:1",
                "etcd3+https://127.0.0.1:1", "postgresql://127.0.0.1:1/db", "mysql://127.0.0.1:1/db",
                "memcached://127.0.0.1:1"]


def _backend_options(url: str) -> list[str]:
    from moot.url import BACKENDS
    module, name, _, _ = BACKENDS[parse_url(url).scheme]
    return sorted(getattr(__import__(module, fromlist=[name]), name).OPTIONS)


@PURE_SETTINGS
@given(value=st.one_of(st.text(max_size=7), st.sampled_from([*BOOLEAN_WORDS, "TRUE", "Off", " true", "true ",
                                                             "treu", "2", "", "enable", "y", "n",
                                                             "\uff54\uff52\uff55\uff45"]),  # full-width
                       st.integers(), st.none(), st.binary(max_size=3), st.booleans()))
def test_a_boolean_is_a_documented_spelling_or_refused_naming_them(value: object) -> None:
    """``option_bool`` (behind tls, verify...) takes true/false, yes/no,
    on/off, 1/0 in any ASCII case and nothing else: never a guess."""
    from moot.url import option_bool
    meant = value if isinstance(value, bool) else \
        BOOLEAN_WORDS.get(value.lower()) if isinstance(value, str) and value.isascii() else None
    try:
        got = option_bool({"tls": value}, "tls", False)
    except moot.InvalidURL as exc:
        assert meant is None, f"{value!r} refused"
        assert "true, false, yes, no, on, off, 1, 0" in str(exc) and "option tls=" in str(exc)
    else:
        assert got is meant, f"{value!r} read as {got}"


@pytest.mark.parametrize("url", BACKEND_URLS)
@PURE_SETTINGS
@given(data=st.data())
def test_any_backend_option_value_is_taken_or_refused_with_invalid_url(url: str, data: st.DataObject) -> None:
    """Every option a backend declares, given any text: the backend is made
    (nothing connects yet) or InvalidURL names the problem, never another
    error; a boolean option never reads an undocumented word."""
    from moot.coordinator import _load_backend
    option = data.draw(st.sampled_from(_backend_options(url)), label="option")
    value = data.draw(st.one_of(st.text(max_size=10), st.sampled_from(
        ["0", "1", "-1", "1e12", "nan", "0600", "0660", "true", "treu", "/nonexistent.pem", "", "a" * 70])),
        label="value")
    parsed = parse_url(url)
    try:
        backend = _load_backend(parsed, {**parsed.query, option: value})
    except moot.InvalidURL:
        return
    backend.close()
    if option in ("tls", "verify"):
        assert value.lower() in BOOLEAN_WORDS, f"{option}={value!r} accepted"


@pytest.mark.parametrize("path", ["/²", "/٣", "/1/2", "/-1", "/0x1", "/" + "9" * 30, "/ 1"])
def test_a_redis_database_that_is_not_a_number_is_refused(path: str) -> None:
    with pytest.raises(moot.InvalidURL, match="must be a database number"):
        moot.connect(f"redis://127.0.0.1:1{path}", timeout=1)
