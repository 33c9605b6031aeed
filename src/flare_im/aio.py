"""Small asyncio helpers shared by the server's background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)


async def stop_tasks(tasks: Iterable[asyncio.Task[None]], *, retry_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until they have ended. A client library may swallow a cancellation (redis-py
    can turn it into a connection error that a retry loop then survives), so the ones still running after
    ``retry_s`` are cancelled again."""
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=retry_s)
        for task in pending:
            task.cancel()


class Repeater:
    """Runs ``job`` every ``interval_s`` in a background task, from ``start`` until ``close``. A run that fails
    is logged and the next one comes on time (a backend briefly unreachable must not end the task)."""

    def __init__(
        self, job: Callable[[], Awaitable[object]], interval_s: float, *, what: str, at_once: bool = False
    ) -> None:
        self._job = job
        self._interval_s = interval_s
        self._what = what  # for the log: "reloading the rules failed"
        self._at_once = at_once  # the first run at start rather than after one interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None

    async def _run(self) -> None:
        if not self._at_once:
            await asyncio.sleep(self._interval_s)
        while True:
            try:
                await self._job()
            except Exception:
                log.exception("%s failed", self._what)
            await asyncio.sleep(self._interval_s)
