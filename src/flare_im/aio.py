"""Small asyncio helpers shared by the server's background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


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


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (a process's orderly stop), in the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or not a Unix
            loop.add_signal_handler(sig, stop.set)
    return stop


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


class GroupWriter(Generic[T]):
    """Records items (the workers' outcomes) as they come back, many per write (group commit): the first waits up
    to ``linger_s`` for others (or until ``group`` are waiting), and while one write is under way the items that
    arrive meanwhile wait and go in the next. The push worker lingers (services/notify_worker.py): a commit costs
    the SQLite writer ~200 µs of CPU (fsync included), a row ~10 µs, and answers trickle in; the webhook worker
    does not."""

    def __init__(
        self, write: Callable[[Sequence[T]], Awaitable[None]], linger_s: float = 0.0, group: int = 500
    ) -> None:
        self._write = write
        self._linger_s, self._group = linger_s, group
        self._pending: list[T] = []
        self._pending_done: asyncio.Future[None] | None = None  # one per write: resolved when it is written
        self._writing: asyncio.Task[None] | None = None
        self._full: asyncio.Future[None] | None = None  # resolved when ``group`` outcomes wait: stop lingering

    async def record(self, item: T) -> None:
        """Returns once ``item`` is written; raises what the write raised."""
        await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[None]:
        """Queue ``item``; the future (shared by every item of its write) resolves once it is written, or fails
        as the write did. The caller must await it."""
        self._pending.append(item)
        done = self._pending_done
        if done is None:
            done = self._pending_done = asyncio.get_running_loop().create_future()
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._drain())
        elif self._full is not None and len(self._pending) >= self._group:
            _resolve(self._full)
        return done

    async def _drain(self) -> None:
        if self._linger_s > 0 and len(self._pending) < self._group:
            loop = asyncio.get_running_loop()
            self._full = full = loop.create_future()
            timer = loop.call_later(self._linger_s, _resolve, full)
            try:
                await full
            finally:
                timer.cancel()
                self._full = None
        while self._pending:
            batch, self._pending = self._pending, []
            done, self._pending_done = self._pending_done, None
            assert done is not None
            try:
                await self._write(batch)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                _resolve(done)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
