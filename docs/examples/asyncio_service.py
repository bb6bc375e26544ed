"""A small aiohttp service whose replicas coordinate through moot.aio.

Each replica joins the group "replicas" (with its address), campaigns in the
election "scheduler" and, while it leads, runs a periodic job fenced by its
leadership token. Every replica serves:

    POST /volumes/{name}/resize   the work, under the lock "volume-{name}"
    GET  /status                  the leader, the group's members, this replica

Start three replicas on one URL (default: a file:// directory in the
temporary directory), then kill the leader and watch another take over:

    python docs/examples/asyncio_service.py 8081 &
    python docs/examples/asyncio_service.py 8082 &
    python docs/examples/asyncio_service.py 8083 &
    curl -s localhost:8081/status
    curl -s -X POST localhost:8082/volumes/7/resize

The URL is the second argument, else $MOOT_URL (e.g. redis://127.0.0.1:6379/0?ttl=2).
Port 0 picks a free port; the replica logs the address it listens on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

import moot
import moot.aio

#: Seconds between two ticks of the leader's job.
PERIOD = 0.2
#: Seconds a resize works while holding its volume's lock.
RESIZE_WORK = 0.05

log = logging.getLogger("asyncio_service")


class Replica:
    """One replica's coordination state and its HTTP handlers."""

    def __init__(self, coord: moot.aio.AsyncCoordinator):
        self.coord = coord
        self.group = coord.group("replicas")
        self.election = coord.election("scheduler", on_lost=self._lost)
        self.ticks = 0
        self.tick_token: int | None = None

    def _lost(self, election: moot.aio.AsyncElection) -> None:  # runs on the event loop
        log.warning("%s: leadership of %r lost", self.coord.member_id, election.name)

    async def campaign(self) -> None:
        """Stand for leadership for as long as the replica runs; lead whenever elected."""
        while True:
            try:
                await self.election.campaign()  # waits on the loop, holding no thread
            except moot.MootError as error:  # e.g. the engine is unreachable: stand again later
                log.warning("%s: campaign failed: %s", self.coord.member_id, error)
                await asyncio.sleep(1.0)
                continue
            log.info("%s: leading with token %s", self.coord.member_id, self.election.token)
            await self.lead()

    async def lead(self) -> None:
        """The leader's periodic job, until the leadership is lost."""
        lost = asyncio.create_task(self.election.wait_lost())
        try:
            while self.election.is_leader and not lost.done():
                self.tick(self.election.token)
                await asyncio.wait([lost], timeout=PERIOD)
            await lost  # is_leader turns False on time; the loss is reported right after
        finally:
            lost.cancel()

    def tick(self, token: int | None) -> None:
        """One run of the job. A real job passes ``token`` to the storage it
        writes, which refuses a write with a token lower than one it has seen."""
        self.ticks += 1
        self.tick_token = token

    async def resize(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        async with self.coord.lock(f"volume-{name}", timeout=5) as held:
            started = time.time()
            await asyncio.sleep(RESIZE_WORK)  # the work; it too would pass held.token to the storage
            if not held.is_held:  # the session was lost meanwhile: the work cannot be trusted
                raise web.HTTPServiceUnavailable(text="lock lost during the resize")
            return web.json_response({"volume": name, "token": held.token, "replica": self.coord.member_id,
                                      "started": started, "finished": time.time()})

    async def status(self, request: web.Request) -> web.Response:
        members = await self.group.members()
        return web.json_response({
            "member_id": self.coord.member_id,
            "leader": await self.election.leader(),
            "is_leader": self.election.is_leader,
            "ticks": {"count": self.ticks, "token": self.tick_token},
            "members": {member_id: member.capabilities for member_id, member in members.items()},
        })


@web.middleware
async def moot_errors(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """moot's errors as JSON: 409 when a lock was not acquired in time, else 503."""
    try:
        return await handler(request)
    except moot.MootError as error:
        status = 409 if isinstance(error, moot.LockTimeout) else 503
        return web.json_response({"error": str(error)}, status=status)


async def serve(url: str, host: str, port: int, member_id: str | None) -> None:
    async with moot.aio.connect(url, member_id=member_id) as coord:  # closed on exit: locks released, group left
        replica = Replica(coord)
        app = web.Application(middlewares=[moot_errors])
        app.add_routes([web.post("/volumes/{name}/resize", replica.resize), web.get("/status", replica.status)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        address = "http://{}:{}".format(*runner.addresses[0][:2])
        await replica.group.join({"address": address})
        campaigning = asyncio.create_task(replica.campaign())
        log.info("%s: listening on %s", coord.member_id, address)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            campaigning.cancel()  # a waiting candidacy is withdrawn before the task ends
            with contextlib.suppress(asyncio.CancelledError):
                await campaigning
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int, help="HTTP port (0: any free port)")
    parser.add_argument("url", nargs="?", help="default: $MOOT_URL, else a file:// directory in the temp dir",
                        default=os.environ.get("MOOT_URL") or f"file://{tempfile.gettempdir()}/moot-asyncio-service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--member-id", help="default: moot's (host name, process id, a random part)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.url, args.host, args.port, args.member_id))


if __name__ == "__main__":
    main()
