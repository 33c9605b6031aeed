"""``flare worker archive``: an archive pass over the cluster's message store every ``archive_interval_s``.

Several may run (for availability): a pass holds PostgreSQL's advisory lock, and a worker that finds it
held skips that round. A pass stopped by SIGTERM is resumed by the next one (clickhouse_source.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from flare_im.aio import stop_on_signals
from flare_im.archive import cluster
from flare_im.archive.archiver import ArchiveError
from flare_im.archive.pg_catalog import ArchiveBusy
from flare_im.config import Settings
from flare_im.observability.metrics import Source, counter, gauge

log = logging.getLogger("flare")


@dataclass
class ArchiveStats:
    passes: int = 0  # passes that completed
    skipped: int = 0  # rounds another worker's pass held the lock
    failures: int = 0
    parts: int = 0
    rows: int = 0
    bytes: int = 0
    last_pass_s: float = 0.0
    last_success: float = 0.0  # unix time of the last completed pass


def archive_source(stats: ArchiveStats) -> Source:
    def source() -> Iterator[Metric]:
        yield counter("archive_passes", "Archive passes completed", stats.passes)
        yield counter("archive_skipped", "Rounds skipped: another worker's pass held the lock", stats.skipped)
        yield counter("archive_failures", "Archive passes that failed (retried next round)", stats.failures)
        yield counter("archive_parts", "Parts written to the object store", stats.parts)
        yield counter("archive_rows", "Message-log rows archived", stats.rows)
        yield counter("archive_bytes", "Parquet bytes written", stats.bytes)
        yield gauge("archive_last_pass_seconds", "Duration of the last completed pass", stats.last_pass_s)
        yield gauge("archive_last_success_time", "Unix time of the last completed pass", stats.last_success)

    return source


async def one_round(settings: Settings, stats: ArchiveStats) -> None:
    started = time.monotonic()
    try:
        report = await cluster.run_once(settings, settings.archive_after_days * 86400)
    except ArchiveBusy:
        stats.skipped += 1
        log.info("archive pass skipped: another worker's pass is running")
        return
    except (ArchiveError, OSError, ValueError) as exc:
        stats.failures += 1
        log.error("archive pass failed (retried in %.0f s): %s", settings.archive_interval_s, exc)
        return
    except Exception:
        stats.failures += 1
        log.exception("archive pass failed (retried in %.0f s)", settings.archive_interval_s)
        return
    stats.passes += 1
    stats.parts += report.parts
    stats.rows += report.rows
    stats.bytes += report.bytes
    stats.last_pass_s = time.monotonic() - started
    stats.last_success = time.time()
    log.info(
        "archive pass: %d parts, %d rows, %d bytes (%d resumed) in %.1f s",
        report.parts,
        report.rows,
        report.bytes,
        report.resumed,
        stats.last_pass_s,
    )


async def run_archive_worker(settings: Settings) -> int:
    from flare_im.observability.wiring import for_worker

    if not settings.distributed:
        raise ValueError("flare worker archive needs a cluster (embedded: flare archive run with the server stopped)")
    cluster.check(settings)
    stats = ArchiveStats()
    stop = stop_on_signals()
    obs, metrics_port = await for_worker("archive", settings, [archive_source(stats)], stop)
    print(
        f"flare worker ready archive interval={settings.archive_interval_s:g}s"
        f" after_days={settings.archive_after_days:g} metrics={metrics_port}",
        flush=True,
    )
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            round_ = asyncio.ensure_future(one_round(settings, stats))
            await asyncio.wait([round_, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not round_.done():  # stopped mid-pass: the next pass (here or elsewhere) resumes it
                round_.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await round_
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), settings.archive_interval_s)
    finally:
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        await obs.close()
    log.info("archive worker stopped: %d passes, %d parts, %d rows", stats.passes, stats.parts, stats.rows)
    return 0
