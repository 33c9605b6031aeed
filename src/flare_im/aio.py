"""Small asyncio helpers shared by the server's background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


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
