"""Settings: one object, from defaults < FLARE_* environment variables < command-line flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    api_port: int = 8080
    ws_port: int = 8081
    data_dir: str = "./flare-data"
    node_id: int = 0  # 0..1023, part of every message id; unique per node
    # Backends by URL; empty means the embedded default under data_dir.
    database_url: str = ""
    message_store_url: str = ""  # sqlite://, clickhouse://host:port/db (HTTP), chdb:///path
    cache_url: str = ""  # redis://...: sequencer, routes, node bus, idempotency, L0 (several nodes)
    cache_prefix: str = "flare:"  # key prefix in Redis (several deployments may share one Redis)
    queue_url: str = ""  # kafka://host:port[,host:port]: the durable messages topic (with cache_url)
    roles: str = "gateway,api"  # what `flare serve` runs: gateway (WebSocket) and/or api (HTTP)
    messages_topic: str = "flare.messages"
    messages_partitions: int = 12
    store_group: str = "flare-store"  # consumer group of `flare worker store`
    route_ttl_s: float = 15.0  # a node that misses heartbeats this long is dead; its routes stop counting
    l0_keep: int = 200  # newest events per conversation kept in L0 (Redis)
    sqlite_synchronous: str = "FULL"
    # Auth
    jwt_secret: str = ""  # empty: generated once and kept in data_dir/jwt.secret
    admin_key: str = ""  # empty: generated once and kept in data_dir/admin.key
    access_token_ttl_s: int = 3600
    refresh_token_ttl_s: int = 30 * 24 * 3600
    allow_registration: bool = True
    # Message gateway limits
    public_ws_url: str = ""  # what GET /v1/gateways returns; empty: ws://host:ws_port/v1/ws
    max_frame_bytes: int = 64 * 1024
    max_body_bytes: int = 16 * 1024
    heartbeat_s: float = 25.0  # server pings an idle connection after this long
    heartbeat_timeout_s: float = 10.0  # and closes it when no pong arrives within this
    auth_timeout_s: float = 10.0
    rate_limit_per_s: float = 100.0  # frames per second per connection (token bucket)
    rate_limit_burst: int = 200
    send_buffer_bytes: int = 1024 * 1024  # write buffer high-water mark per connection
    slow_consumer_grace_s: float = 5.0  # how long a connection may stay above the mark
    presence_debounce_s: float = 5.0  # a user is announced offline after this long without a device
    typing_interval_s: float = 2.0  # at most one typing notice per user and conversation this often
    idempotency_window_s: int = 300
    user_send_rate_per_s: int = 0  # messages per second per user, all devices and nodes together; 0: off
    recall_window_s: float = 120.0  # a sender may recall/delete for everyone this long after sending
    filter_refresh_s: float = 2.0  # how soon a node applies content-filter rules changed on another node
    idempotency_cache_size: int = 20_000  # most recent sends kept exactly (older ones: filters + log)
    shutdown_grace_s: float = 5.0
    gc_threshold: int = 50_000  # allocations between young-generation collections (0: Python's default)
    log_level: str = "INFO"

    @property
    def sqlite_path(self) -> str:
        return str(Path(self.data_dir) / "flare.db")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def effective_message_store_url(self) -> str:
        """The message log shares the embedded database file unless the relational data lives elsewhere."""
        if self.message_store_url:
            return self.message_store_url
        database_url = self.effective_database_url
        return database_url if database_url.startswith("sqlite://") else f"sqlite:///{self.sqlite_path}"

    @property
    def distributed(self) -> bool:
        """Several nodes share Redis (and Kafka + a message store): the cluster wiring is used."""
        return bool(self.cache_url)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @property
    def ws_url(self) -> str:
        return self.public_ws_url or f"ws://{self.host}:{self.ws_port}/v1/ws"

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, then ``FLARE_<FIELD>`` environment variables, then ``overrides`` (non-None values)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"FLARE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f, raw)
        known = {f.name: f for f in fields(cls)}
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}")
            if value is not None:
                values[key] = _coerce(known[key], value) if isinstance(value, str) else value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 <= self.node_id <= 1023:
            raise ValueError("node_id must be in 0..1023")
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        roles = {r.strip() for r in self.roles.split(",") if r.strip()}
        if not roles or not roles <= {"gateway", "api"}:
            raise ValueError("roles must be a comma-separated subset of gateway, api")
        if bool(self.queue_url) != bool(self.cache_url):
            raise ValueError("several nodes need both cache_url (Redis) and queue_url (Kafka), or neither")
        if self.distributed and not self.message_store_url.startswith(("clickhouse://", "chdb://")):
            raise ValueError("with cache_url and queue_url, message_store_url must be clickhouse:// or chdb://")
        for name in ("api_port", "ws_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be a TCP port")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            word = raw.strip().lower()
            if word not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                raise ValueError(raw)
            return word in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"FLARE_{f.name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
