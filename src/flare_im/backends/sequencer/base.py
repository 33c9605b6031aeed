"""The sequencer port: per-conversation seq allocation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

# Reads the largest seq the durable log holds for a conversation (re-seeds a sequencer that lost state).
SeedFn = Callable[[str], Awaitable[int]]


class Sequencer(Protocol):
    async def next_seq(self, conv: str) -> int:
        """The next seq of ``conv``: strictly larger than every seq handed out before for it and than
        every seq in the durable log, with no gap when each handed-out seq gets stored."""
        ...

    def forget(self, conv: str) -> None:
        """Drop cached state for ``conv`` so the next call re-seeds from the durable log (after a failed
        append, so a seq that was never stored is handed out again rather than left as a gap).

        Called by the task whose append failed, right after it. In-process, a seq of an append still in
        flight may be handed out again (the log rejects the duplicate append). A sequencer shared by several
        nodes (Redis) takes back only the failed seq, and only while nobody was handed a later one;
        otherwise the failed seq stays a gap, which readers skip."""
        ...
