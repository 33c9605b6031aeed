"""One SQLite database file shared by the embedded adapters: inline reads, group-committed writes.

Reads run on the event-loop thread over their own connection (WAL mode: they see only committed data and
never wait for the writer). Writes are *operations* (a function given the writer's connection) queued to
one writer thread, which runs every queued operation in a single transaction and commits once: many
concurrent sends share one commit (group commit). An operation's future resolves only after COMMIT
returned, so an awaited write is durable (``synchronous`` = FULL by default: fsync on every commit).

Guarantees: operations run in submission order. An operation that raises fails alone (SQLite rolls
back only the failing statement); a failed COMMIT fails every operation of that transaction.

The write-ahead log stays bounded under a writer that never pauses. A checkpoint thread copies the WAL
back into the database every ``checkpoint_interval_s`` (PASSIVE: it never blocks the writer), but SQLite
starts the WAL over only when a write transaction begins with every frame copied back, which never
happens while commits follow one another. So once the WAL file passes ``wal_reset_bytes`` the writer
wakes the checkpoint thread, which copies back until a pass is short; the writer then copies back the
few frames committed during that last pass itself, between two transactions (the acks of the previous
one are already out), and the next transaction starts the WAL over: ``journal_size_limit`` truncates the
file back to ``wal_reset_bytes``. If the thread lags, the writer does the whole checkpoint itself at
twice that size, so the file stays below about ``2 * wal_reset_bytes`` plus one transaction. Not
guaranteed: a reader that keeps a snapshot open (a statement left unfinished) pins the WAL until it
ends; the start-over is retried after it.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from flare_im.backends.migrations import Migration, Schema, SqliteMigrator
from flare_im.observability.stats import SIZE_BUCKETS, Histogram

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], Any]

_STOP = object()
_IN_CHUNK = 500  # values per IN list: far below the parameter limit of any SQLite build
# Before a WAL reset the checkpoint thread copies back again until a pass takes less than _RESET_TAIL_S, or
# stops getting shorter, or after _RESET_PASSES passes: the writer then copies back only what was committed
# during the last pass. (Each pass ends with an fsync of the database file, which can hold up the fsync of
# a commit on the same disk: more passes are not free.)
_RESET_TAIL_S = 0.005
_RESET_PASSES = 3
RESET_HARD_FACTOR = 2  # past this many times wal_reset_bytes the writer does not wait for the thread


@dataclass(frozen=True, slots=True)
class SqliteConfig:
    path: str
    synchronous: str = "FULL"  # FULL: durable across power loss; NORMAL: across process crashes only
    max_batch: int = 4096  # operations per transaction (group commit bound)
    busy_timeout_ms: int = 5000
    checkpoint_interval_s: float = 1.0
    # Start the WAL over past this size (see the module docstring); 0: never. Each start-over stops commits for
    # the fsync of the database file (tens of ms on a busy disk): 256 MiB makes that about twice a minute at a
    # steady 2,000 msgs/s on 1 KiB pages (docs/performance.md, "Smaller pages").
    wal_reset_bytes: int = 256 * 2**20
    page_size: int = 4096  # of a file created here (an existing file keeps its own); SQLite's default


class OpenSqlite(Protocol):
    """Opens (or returns the already open) database of a ``sqlite://`` URL; ``page_size`` applies if it creates
    the file (None: the node's setting)."""

    def __call__(self, url: str, *, page_size: int | None = None) -> SqliteDatabase: ...


def parse_sqlite_url(url: str) -> str:
    """``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db`` or ``sqlite://:memory:`` -> path."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ValueError(f"sqlite URL must look like sqlite:///path.db, got {url!r}")
    return rest[1:]


class SqliteDatabase:
    def __init__(self, config: SqliteConfig) -> None:
        self.config = config
        path = config.path
        if path == ":memory:":
            # Reader and writer must see one database: a shared-cache in-memory URI does that.
            path = f"file:flare-mem-{id(self)}?mode=memory&cache=shared"
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._uri = path.startswith("file:")
        self._path = path
        self._writer = self._connect()
        self._writer.execute(f"PRAGMA page_size={int(config.page_size)}")  # before WAL mode, which fixes it
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute(f"PRAGMA synchronous={config.synchronous}")
        # Checkpoints run on their own thread and connection (see _checkpoints), not inside a commit,
        # where copying the WAL back would stall every send waiting for that commit.
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._wal_path = "" if self._uri or path == ":memory:" else path + "-wal"
        if config.wal_reset_bytes > 0:
            self._writer.execute(f"PRAGMA journal_size_limit={config.wal_reset_bytes}")
        self._writer.execute("PRAGMA cache_size=-65536")
        self.reader = self._connect()
        self.reader.execute("PRAGMA query_only=1")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = False
        self._wake_checkpointer = threading.Event()
        self._reset_requested = False  # the writer asked the checkpoint thread for a pass before a reset
        self._reset_ready = False  # that pass is done: the writer copies back the rest and the WAL starts over
        self._background = False  # derived(): its threads yield the CPU to the send path
        self.writer_cpu_s = 0.0  # CPU time of the writer thread in transactions, updated before their futures resolve
        self.commits = 0  # transactions committed (for metrics and tests of group commit)
        self.ops = 0
        self.wal_resets = 0  # checkpoints the writer ran itself to start the WAL over
        self.commit_seconds = Histogram()  # COMMIT alone (the fsync), per transaction (read by /metrics)
        # The rest of an operation's time to durable: its transaction's wait in the queue (the oldest
        # operation's), and the whole transaction on the writer thread, where each statement gives up the
        # GIL and waits to get it back from the event loop.
        self.queue_seconds = Histogram()
        self.transaction_seconds = Histogram()
        self.batch_sizes = Histogram(SIZE_BUCKETS)  # operations per transaction
        self.checkpoint_seconds = Histogram()  # one pass of the checkpoint thread (commits go on meanwhile)
        self.reset_seconds = Histogram()  # the writer's own copy-back before a WAL reset (no commit meanwhile)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, uri=self._uri, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self.config.busy_timeout_ms}")
        return conn

    def derived(self) -> None:
        """This file holds data rebuilt from another one (an index), before start(): its commits do not wait
        for the disk (``synchronous=NORMAL``: WAL mode keeps the file consistent across a crash, a power loss
        may lose the last transactions, which the owner rebuilds). It spares the disk an fsync per commit
        that the store's own commits, which must wait for theirs, would queue behind.

        Its threads also run at a lower CPU priority (``BACKGROUND_NICE``, Linux): on a busy core the event
        loop and the store's writer, which sends wait for, go first, and the index falls behind instead;
        it catches up when the load eases."""
        self._writer.execute("PRAGMA synchronous=NORMAL")
        self._background = True

    def migrate(self, statements: Iterable[str]) -> None:
        """Run schema statements (idempotent DDL) on the writer connection, before start()."""
        for stmt in statements:
            self._writer.execute(stmt)

    def create_function(self, name: str, narg: int, func: Callable[..., Any]) -> None:
        """Register a deterministic SQL function on the writer and the reader, before start() (a trigger
        that calls it runs on the writer)."""
        for conn in (self._writer, self.reader):
            conn.create_function(name, narg, func, deterministic=True)

    def apply_migrations(self, schema: Schema) -> list[Migration]:
        """Bring ``schema`` up to date on the writer connection (see migrations.py), before start()."""
        if self._thread is not None:
            raise RuntimeError("apply_migrations() must run before start(): the writer thread owns the connection")
        return SqliteMigrator(self._writer, schema).apply()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="flare-sqlite-writer", daemon=True)
        self._thread.start()
        if self._wal_path:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="flare-sqlite-ckpt", daemon=True)
            self._checkpointer.start()

    async def close(self) -> None:
        """Flush queued writes, stop the writer thread, close both connections."""
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._checkpointer is not None:
            self._stop_checkpoints = True
            self._wake_checkpointer.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._writer.close()
        self.reader.close()

    def write(self, op: WriteOp) -> asyncio.Future[Any]:
        """Queue ``op``; the future resolves with its return value once its transaction committed."""
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("SqliteDatabase is not running (start() not called, or closed)")
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((op, fut, time.perf_counter()))
        return fut

    # ------------------------------------------------------------- read helpers (event-loop thread)

    def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.reader.execute(sql, tuple(params)).fetchone()

    def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return self.reader.execute(sql, tuple(params)).fetchall()

    def fetchall_in(self, sql: str, values: Sequence[Any], params: Sequence[Any] = ()) -> list[Any]:
        """``fetchall`` of ``sql`` whose ``IN (?*)`` stands for ``values``, run on chunks of them (a statement
        takes a bounded number of parameters); ``params`` go before the values. Rows come chunk by chunk."""
        rows: list[Any] = []
        for i in range(0, len(values), _IN_CHUNK):
            chunk = values[i : i + _IN_CHUNK]
            rows += self.fetchall(sql.replace("IN (?*)", f"IN ({','.join('?' * len(chunk))})"), (*params, *chunk))
        return rows

    # ------------------------------------------------------------- checkpoint thread

    def _checkpoints(self) -> None:
        """Copy the WAL back into the database regularly, and at once when the writer asks for it before
        a reset (PASSIVE: never blocks the writer)."""
        if self._background:
            lower_thread_priority()
        conn = self._connect()
        try:
            while True:
                self._wake_checkpointer.wait(self.config.checkpoint_interval_s)
                self._wake_checkpointer.clear()
                if self._stop_checkpoints:
                    break
                requested = self._reset_requested
                took = _checkpoint(conn)
                self.checkpoint_seconds.observe(took)
                if requested:
                    passes = 1
                    # Until the writer took over (past the hard bound it resets without waiting for us).
                    previous = float("inf")
                    while _RESET_TAIL_S < took < previous / 2 and passes < _RESET_PASSES and self._reset_requested:
                        previous, took = took, _checkpoint(conn)
                        self.checkpoint_seconds.observe(took)
                        passes += 1
                    self._reset_ready = self._reset_requested
        finally:
            conn.close()

    def _bound_wal(self, conn: sqlite3.Connection) -> None:
        """Between two transactions (writer thread): start the WAL over once it passed ``wal_reset_bytes``."""
        limit = self.config.wal_reset_bytes
        try:
            size = os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return
        if size <= limit:
            return
        if not (self._reset_ready or size > RESET_HARD_FACTOR * limit or self._checkpointer is None):
            if not self._reset_requested:  # let the checkpoint thread copy most of it back first
                self._reset_requested = True
                self._wake_checkpointer.set()
            return
        self._reset_requested = self._reset_ready = False
        try:
            # Nothing commits meanwhile, so this copies back every frame no reader still needs; the next
            # transaction then writes the WAL from its start (a reader in the way: retried next time).
            started = time.perf_counter()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.reset_seconds.observe(time.perf_counter() - started)
            self.wal_resets += 1
        except sqlite3.Error:
            log.exception("sqlite checkpoint failed")

    # ------------------------------------------------------------- writer thread

    def _run(self) -> None:
        if self._background:
            lower_thread_priority()
        q = self._queue
        conn = self._writer
        stop = False
        while not stop:
            batch: list[tuple[WriteOp, asyncio.Future[Any], float]] = []
            item = q.get()
            while True:
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                if len(batch) >= self.config.max_batch:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._run_batch(conn, batch)
                if self._wal_path and self.config.wal_reset_bytes > 0:
                    self._bound_wal(conn)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[WriteOp, asyncio.Future[Any], float]]) -> None:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        cpu_started = time.thread_time()
        started = time.perf_counter()
        self.queue_seconds.observe(started - batch[0][2])
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, fut, _ in batch:
                try:
                    results.append((fut, op(conn), None))
                except Exception as exc:  # one bad operation fails alone
                    results.append((fut, None, exc))
            committing = time.perf_counter()
            conn.execute("COMMIT")
            committed = time.perf_counter()
            self.commit_seconds.observe(committed - committing)
            self.transaction_seconds.observe(committed - started)
            self.batch_sizes.observe(len(batch))
            self.commits += 1
            self.ops += len(batch)
        except Exception as exc:
            log.exception("sqlite transaction of %d operations failed", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(fut, None, exc) for _, fut, _ in batch]
        self.writer_cpu_s += time.thread_time() - cpu_started
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve, results)


BACKGROUND_NICE = 5  # CFS weight 335 against 1024: a quarter of a core it must share, all of an idle one


def lower_thread_priority(by: int = BACKGROUND_NICE) -> None:
    """Lower the calling thread's CPU priority (Linux: a thread id names that thread alone); no-op elsewhere."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + by)
    except (AttributeError, OSError):  # no setpriority, or not allowed: the thread runs at normal priority
        log.debug("cannot lower a thread's priority", exc_info=True)


def _checkpoint(conn: sqlite3.Connection) -> float:
    """A PASSIVE checkpoint on ``conn``; returns how long it took (seconds)."""
    started = time.monotonic()
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        log.exception("sqlite checkpoint failed")
    return time.monotonic() - started


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


ParamsFn = Callable[[list[tuple[Any, ...]]], Iterable[Sequence[Any]]]


class MultiRow:
    """A statement that takes many rows at once: ``head`` + ``(?,...)`` per row, comma-separated, + ``tail``.

    executemany runs its statement once per row, and each run gives up the GIL (sqlite3 releases it around
    every step) and has to take it back from the event loop and the other writers: thousands of rows mean
    thousands of handovers. Here rows go in chunks of a power of two (up to ``max_rows``), so n rows take
    n // max_rows runs plus at most log2(max_rows) more, and only a few distinct statements stay prepared.
    """

    def __init__(self, head: str, width: int, tail: str = "", *, max_rows: int = 64) -> None:
        if width < 1 or max_rows < 1 or max_rows & (max_rows - 1):
            raise ValueError("width >= 1 and max_rows a power of two")
        self.head, self.tail, self.width, self.max_rows = head, tail, width, max_rows
        self._row = "(" + ",".join("?" * width) + ")"
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        text = self._sql.get(rows)
        if text is None:
            text = self._sql[rows] = self.head + ",".join([self._row] * rows) + self.tail
        return text

    def run(self, conn: sqlite3.Connection, params: Iterable[Sequence[Any]]) -> None:
        rows = params if isinstance(params, list) else list(params)
        done, total = 0, len(rows)
        while done < total:
            size = min(self.max_rows, 1 << ((total - done).bit_length() - 1))
            chunk = rows[done : done + size]
            flat = [value for row in chunk for value in row]
            if len(flat) != size * self.width:
                raise ValueError(f"each row needs {self.width} values")
            conn.execute(self.sql(size), flat)
            done += size


def columns(*positions: int) -> ParamsFn:
    """Parameters that are the row's values at ``positions``, one set per row."""
    pick = operator.itemgetter(*positions)
    return lambda rows: map(pick, rows)


class RowBatcher:
    """Turns many single-row writes into one ``executemany`` per transaction.

    ``add(row)`` returns the future of the batch the row joined and the row's index in it. The batch's
    operation takes every row added until the writer runs it, so one transaction carries them all. The
    future's result is None when every row was written, else a list with each row's exception (or None):
    when the bulk statement fails, the rows are retried one by one so one bad row fails alone.
    """

    def __init__(self, db: SqliteDatabase, statements: Sequence[tuple[str, ParamsFn]]) -> None:
        """``statements``: each SQL with the function that turns a batch of rows into its parameters
        (``columns(...)`` for a plain projection; a function may also merge rows, e.g. keep a maximum)."""
        self._db = db
        self._statements = list(statements)
        self._lock = threading.Lock()
        self._open: tuple[asyncio.Future[Any], list[tuple[Any, ...]]] | None = None  # the batch rows join

    def add(self, row: tuple[Any, ...]) -> tuple[asyncio.Future[Any], int]:
        with self._lock:
            batch = self._open
            if batch is None:
                rows: list[tuple[Any, ...]] = []
                batch = self._open = (self._db.write(lambda conn: self._flush(conn, rows)), rows)
            batch[1].append(row)
            return batch[0], len(batch[1]) - 1

    def seal(self) -> None:
        """Close the open batch: rows added from now on are written after writes queued from now on
        (keeps call order between this batcher's rows and another write)."""
        with self._lock:
            self._open = None

    def _flush(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[BaseException | None] | None:
        with self._lock:
            if self._open is not None and self._open[1] is rows:
                self._open = None
        conn.execute("SAVEPOINT row_batch")
        try:
            for sql, params in self._statements:
                conn.executemany(sql, params(rows))
        except sqlite3.Error:
            conn.execute("ROLLBACK TO row_batch")
            conn.execute("RELEASE row_batch")
            return [self._one(conn, row) for row in rows]
        conn.execute("RELEASE row_batch")
        return None

    def _one(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> BaseException | None:
        conn.execute("SAVEPOINT row_one")
        try:
            for sql, params in self._statements:
                conn.executemany(sql, params([row]))
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO row_one")
            conn.execute("RELEASE row_one")
            return exc
        conn.execute("RELEASE row_one")
        return None

    def submit(self, row: tuple[Any, ...]) -> Coroutine[Any, Any, None]:
        """Queue ``row`` now; the returned coroutine finishes once it is committed (or raises its error)."""
        fut, index = self.add(row)
        return _row_result(fut, index)


async def _row_result(fut: asyncio.Future[Any], index: int) -> None:
    errors = await fut
    if errors is not None and errors[index] is not None:
        raise errors[index]
