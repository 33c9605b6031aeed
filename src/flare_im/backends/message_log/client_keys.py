"""The idempotency keys of the SQLite log's recent rows, in memory: hash of (sender, cmid) -> msg_ids.

Why not an index in the file: client message ids are random keys, so an index on them puts each append in a
leaf of its own, and with commits of a few messages that is one more page written to the WAL per message. It
nearly doubled what checkpoints copy back, and p99 under steady load grew with it (docs/performance.md, "The
idempotency key index and the tail"). The log is asked for a key only within the idempotency window, so a
table of the window's keys in memory answers instead, and the file keeps no index on them.

Layout: generations of open-addressing hash tables, each two flat arrays (the key's 64-bit hash, the msg_id).
The newest generation takes the inserts; a new one starts every ``span_s`` (sized for the last one's count)
or when the newest is two-thirds full (twice as large). A generation whose last insert is older than the
horizon is dropped whole. Lookups return every msg_id stored under the key's hash: the log reads those rows
and compares the key, so a hash collision, or the key of an append that rolled back, costs a row read and
never a wrong answer. Memory: 16 bytes per slot, 24 to 32 per key added within the horizon (plus a span and
the clock slack).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable

from flare_im.ids import now_ms

_MASK = (1 << 64) - 1


def _hash(sender: str, cmid: str) -> int:
    return (hash((sender, cmid)) & _MASK) or 1  # 0 marks an empty slot


class _Generation:
    __slots__ = ("count", "hashes", "ids", "last_ms", "limit", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.hashes = array("Q", bytes(8 * size))
        self.ids = array("q", bytes(8 * size))
        self.count = 0
        self.limit = size * 2 // 3
        self.last_ms = 0

    def add(self, h: int, msg_id: int) -> None:
        hashes, size = self.hashes, self.size
        i = h % size
        while hashes[i]:
            i = i + 1 if i + 1 < size else 0
        hashes[i] = h
        self.ids[i] = msg_id
        self.count += 1

    def find(self, h: int, into: list[int]) -> None:
        hashes, size = self.hashes, self.size
        i = h % size
        while found := hashes[i]:
            if found == h:
                into.append(self.ids[i])
            i = i + 1 if i + 1 < size else 0


class RecentClientKeys:
    """Every row whose id was made at or after ``covered_from_ms`` is in the table (given that each append
    was added), and stays in it while it is younger than ``horizon_s``.

    ``clock_slack_ms``: how far a msg_id's time may run ahead of the time its row was added (ids made by a
    node whose clock is ahead); a generation is kept that much longer, and coverage moves only that far
    behind its last insert."""

    MIN_SLOTS = 1 << 12

    def __init__(
        self,
        *,
        horizon_s: float,
        span_s: float = 30.0,
        clock_slack_ms: int = 60_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._horizon_ms = int(horizon_s * 1000)
        self._span_ms = max(1, int(span_s * 1000))
        self._slack_ms = clock_slack_ms
        self._clock = clock
        self._generations: list[_Generation] = [_Generation(self.MIN_SLOTS)]
        self._next_span_ms = clock() + self._span_ms
        self.covered_from_ms = clock()  # nothing older was loaded

    def __len__(self) -> int:
        return sum(g.count for g in self._generations)

    @property
    def slots(self) -> int:
        return sum(g.size for g in self._generations)

    def add(self, sender: str, cmid: str, msg_id: int) -> None:
        now = self._clock()
        if now >= self._next_span_ms:
            self._start_span(now)
        newest = self._generations[-1]
        if newest.count >= newest.limit:
            newest = _Generation(newest.size * 2)
            self._generations.append(newest)
        newest.add(_hash(sender, cmid), msg_id)
        newest.last_ms = now

    def candidates(self, sender: str, cmid: str) -> list[int]:
        """The msg_ids added under this key's hash (the key's own among them, if it was added)."""
        h = _hash(sender, cmid)
        found: list[int] = []
        for generation in self._generations:
            generation.find(h, found)
        return found

    def load(self, rows: Iterable[tuple[int, str, str]], *, since_ms: int) -> None:
        """Add the stored rows ``(msg_id, sender, cmid)`` whose id was made at or after ``since_ms``: all of
        them (a log being opened), so the table then covers from there."""
        for msg_id, sender, cmid in rows:
            self.add(sender, cmid, msg_id)
        self.covered_from_ms = min(self.covered_from_ms, since_ms)

    def _start_span(self, now: int) -> None:
        self._next_span_ms = now + self._span_ms
        generations = self._generations
        expired = now - self._horizon_ms - self._slack_ms
        while len(generations) > 1 and generations[0].last_ms < expired:
            dropped = generations.pop(0)
            # Ids made up to clock_slack after its last insert may have been in it.
            self.covered_from_ms = max(self.covered_from_ms, dropped.last_ms + self._slack_ms)
        newest = generations[-1]
        if newest.count:
            generations.append(_Generation(max(self.MIN_SLOTS, newest.count * 3 // 2 + 1)))
