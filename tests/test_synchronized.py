"""@moot.synchronized: cinder-style locks named after the call's arguments."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import moot
from tests.waiting import wait_event, wait_until


@dataclass
class Volume:
    id: str


@pytest.fixture(params=["memory", "file"])
def coords(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[moot.Coordinator]]:
    """Two coordinators on one store (memory:// or file://), in a fresh namespace."""
    url = f"memory://sync-{uuid.uuid4().hex}" if request.param == "memory" else f"file://{tmp_path}"
    opened = [moot.connect(url, member_id=f"c{i}", ttl=2) for i in range(2)]
    yield opened
    moot.set_default(None)
    for coord in opened:
        coord.close()


def test_lock_name_from_arguments_methods_and_defaults(coords: list[moot.Coordinator]) -> None:
    coord = coords[0]
    seen: list[tuple[str, str | None]] = []

    class Manager:
        host = "node-1"

        @moot.synchronized("{self.host}-{volume.id}-{f_name}-{mode}", coordinator=coord)
        def delete_volume(self, context: object, volume: Volume, mode: str = "force") -> str:
            """Delete it."""
            seen.extend((info.name, info.holder) for info in coord.locks())
            return f"deleted {volume.id}"

    assert Manager().delete_volume(None, Volume("v-42")) == "deleted v-42"
    assert seen == [("node-1-v-42-delete_volume-force", "c0")]
    assert coord.locks() == []  # released after the call
    assert Manager.delete_volume.__name__ == "delete_volume" and Manager.delete_volume.__doc__ == "Delete it."

    names: list[str] = []

    @moot.synchronized("{volume_id}-{kwargs[tag]}", coordinator=coord)
    def with_kwargs(volume_id: str, **kwargs: Any) -> None:
        names.extend(info.name for info in coord.locks())

    with_kwargs("v-1", tag="snap")
    assert names == ["v-1-snap"]


def test_same_name_excludes_across_coordinators_other_names_do_not(coords: list[moot.Coordinator]) -> None:
    first, second = coords
    entered, leave = threading.Event(), threading.Event()

    def body(volume_id: str) -> None:
        entered.set()
        assert leave.wait(20)

    slow = moot.synchronized("{volume_id}", coordinator=first)(body)
    quick = moot.synchronized("{volume_id}", coordinator=second)(lambda volume_id: volume_id)
    worker = threading.Thread(target=slow, args=("v-1",))
    worker.start()
    wait_event(entered, what="first call inside the lock")
    assert quick("v-2") == "v-2"  # another volume: not blocked
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (quick("v-1"), done.set()))
    waiter.start()
    wait_until(lambda: len(getattr(first.lock_info("v-1"), "waiters", ())) == 1, what="second call waiting")
    assert not done.is_set()
    leave.set()
    wait_event(done, what="second call served after the first")
    worker.join()
    waiter.join()


def test_timeout_and_non_blocking(coords: list[moot.Coordinator]) -> None:
    first, second = coords
    held = first.lock("busy")
    assert held.acquire()
    for decorator in (moot.synchronized("busy", coordinator=second, timeout=0.05),
                      moot.synchronized("busy", coordinator=second, blocking=False)):
        with pytest.raises(moot.LockTimeout, match="busy"):
            decorator(lambda: None)()
    held.release()
    assert moot.synchronized("busy", coordinator=second, blocking=False)(lambda: 7)() == 7


def test_released_when_the_function_raises(coords: list[moot.Coordinator]) -> None:
    coord = coords[0]

    @moot.synchronized("failing-{n}", coordinator=coord)
    def failing(n: int) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing(1)
    assert coord.locks() == []


def test_default_coordinator_is_looked_up_at_call_time(coords: list[moot.Coordinator]) -> None:
    @moot.synchronized("job-{job}")
    def run(job: int) -> int:
        return job

    with pytest.raises(moot.ConfigurationError, match="set_default"):
        run(1)
    moot.set_default(coords[1])
    assert moot.get_default() is coords[1]
    assert run(2) == 2
    moot.set_default(None)
    with pytest.raises(moot.ConfigurationError):
        moot.get_default()


@pytest.mark.parametrize("template", ["{missing}", "{0}", "{}", "{volume_id", "", "{self.x}"])
def test_bad_templates_fail_when_decorating(template: str) -> None:
    with pytest.raises(moot.InvalidArgument):
        moot.synchronized(template)(lambda volume_id: None)


def test_bad_arguments_fail_at_once(coords: list[moot.Coordinator]) -> None:
    with pytest.raises(moot.InvalidArgument):
        moot.synchronized("x", timeout=-1)

    async def coroutine() -> None: ...

    with pytest.raises(moot.InvalidArgument, match="coroutine"):
        moot.synchronized("x")(coroutine)

    @moot.synchronized("{volume.id}", coordinator=coords[0])
    def no_id(volume: object) -> None: ...

    with pytest.raises(moot.InvalidArgument, match=r"\{volume\.id\}"):
        no_id(object())
    with pytest.raises(TypeError):
        no_id()  # type: ignore[call-arg]  # a wrong call fails as it would undecorated
