"""One process's observability: the registry its /metrics reads, its readiness checks, the runtime watch.

app.py (``flare serve``), distributed.py (``flare worker store``) and notify_node.py (``flare worker push``)
build one with what they made; nothing here reaches into a module-level registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from flare_im.config import Settings
from flare_im.observability.endpoints import HttpStats, http_source, metrics_server_port, start_metrics_server
from flare_im.observability.health import Check, Health, sqlite_check, url_checks
from flare_im.observability.metrics import FlareCollector, RuntimeStats, Source, new_registry, runtime_families
from flare_im.observability.sources import (
    filter_source,
    gateway_source,
    pipeline_source,
    producer_source,
    readiness_source,
    send_source,
    sqlite_source,
)

if TYPE_CHECKING:
    from flare_im.app import Node

log = logging.getLogger("flare")

READINESS_INTERVAL_S = 5.0


@dataclass(slots=True)
class Observability:
    collector: FlareCollector
    registry: CollectorRegistry
    health: Health
    runtime: RuntimeStats
    http: HttpStats = field(default_factory=HttpStats)
    server: asyncio.Server | None = None
    _watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.runtime.start()
        self._watch = asyncio.ensure_future(self._check_readiness())

    async def _check_readiness(self) -> None:
        """Keeps ``flare_ready`` current between /readyz probes (alerts read it)."""
        while True:
            try:
                await self.health.ready()
            except Exception:  # a check's own bug: the gauge reads 0, /readyz shows the error
                log.warning("readiness check failed", exc_info=True)
            await asyncio.sleep(READINESS_INTERVAL_S)

    async def listen(self, host: str, port: int) -> int:
        """The listener of its own (``metrics_port``); returns the port it bound."""
        self.server = await start_metrics_server(host, port, self.registry, self.health)
        return metrics_server_port(self.server)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.server is not None:
            self.server.close()
        await self.runtime.close()


def build(role: str, sources: Iterable[Source], health: Health) -> Observability:
    runtime = RuntimeStats()
    collector = FlareCollector(role, [*sources, runtime_families(runtime), readiness_source(lambda: health.last_ready)])
    return Observability(collector, new_registry(collector), health, runtime)


def settings_checks(settings: Settings) -> dict[str, Check]:
    return url_checks(
        database_url=settings.database_url,
        message_store_url=settings.message_store_url,
        cache_url=settings.cache_url,
        queue_url=settings.queue_url,
    )


def for_node(settings: Settings, node: Node) -> Observability:
    """``flare serve``: the gateway, the send path, SQLite, the filter, and what the node's build added."""
    checks = settings_checks(settings)
    for db in node.databases:
        checks[f"sqlite:{db.config.path.rsplit('/', 1)[-1]}"] = sqlite_check(db)
    health = Health(checks, draining=lambda: not node.gateway.accepting)
    gateway = node.gateway
    sources: list[Source] = [
        gateway_source(gateway.stats, lambda: len(node.hub), node.hub.delivered),
        send_source(node.router.stages),
        sqlite_source(node.databases),
        filter_source(node.api.content_filter),
        *node.metric_sources,
    ]
    roles = ",".join(sorted(settings.role_set))
    obs = build(f"serve:{roles}", sources, health)
    obs.collector.add(http_source(obs.http))
    return obs


def cluster_sources(cluster: Any) -> list[Source]:
    """A node's Redis pipelines and Kafka producer (distributed.ClusterBackends)."""
    pipelines = [
        (name, pipe)
        for name, owner in (("sequencer", cluster.sequencer), ("idempotency", cluster.idempotency))
        if (pipe := getattr(owner, "_pipe", None)) is not None  # the adapters' AutoPipeline
    ]
    sources: list[Source] = [pipeline_source(pipelines)]
    producer = getattr(cluster.log, "_producer", None)
    if producer is not None and hasattr(producer, "produce_seconds"):
        sources.append(producer_source(producer))
    return sources


async def for_worker(
    role: str, settings: Settings, sources: Iterable[Source], stopping: asyncio.Event
) -> tuple[Observability, int]:
    """A worker's registry and listener on ``metrics_port``; returns it and the port. 0 binds a free port (in the
    ready line): several workers on one machine must not clash; a deployment sets the port (9464 in deploy/)."""
    health = Health(settings_checks(settings), draining=stopping.is_set)
    obs = build(f"worker:{role}", sources, health)
    obs.start()
    port = await obs.listen(settings.host, settings.metrics_port)
    return obs, port
