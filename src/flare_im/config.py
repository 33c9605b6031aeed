"""Settings: one object, from defaults < FLARE_* environment variables < command-line flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from flare_im.netlimits import networks_of

SQLITE_PAGE_SIZES = frozenset(2**n for n in range(9, 17))


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
    search_url: str = ""  # message search: empty follows the message store (data_dir/search.db, or its ClickHouse); off
    cache_url: str = ""  # redis://...: sequencer, routes, node bus, idempotency, L0 (several nodes)
    cache_prefix: str = "flare:"  # key prefix in Redis (several deployments may share one Redis)
    queue_url: str = ""  # kafka://host:port[,host:port]: the durable messages topic (with cache_url)
    roles: str = "gateway,api"  # what `flare serve` runs: gateway (WebSocket) and/or api (HTTP)
    messages_topic: str = "flare.messages"
    messages_partitions: int = 12
    store_group: str = "flare-store"  # consumer group of `flare worker store`
    # Notifications (docs/push.md): the push queue (in-process on one node, Kafka with queue_url) and its worker
    push_enabled: bool = True  # false: nothing is queued for push (the send path does not even encode events)
    push_topic: str = "flare.push"
    push_partitions: int = 12
    push_group: str = "flare-push"  # consumer group of `flare worker push`
    push_collapse_window_s: float = 5.0  # a burst in one conversation to one device becomes one summary
    push_max_tries: int = 8  # sends of one notification before it goes to the dead letters
    push_backoff_s: float = 2.0  # first retry delay, doubled per try (with jitter), at least Retry-After
    push_device_rate_per_min: int = 30  # notifications per device per minute; beyond: dropped (0: no limit)
    push_provider_rate_per_s: float = 0.0  # sends per provider per second per worker (0: no limit)
    push_history_days: float = 7.0  # how long sent/failed/dropped/dead jobs are kept (history, stats)
    push_lease_s: float = 60.0  # a job claimed by a worker that died before recording it is sent again after this
    route_ttl_s: float = 15.0  # a node that misses heartbeats this long is dead; its routes stop counting
    l0_keep: int = 200  # newest events per conversation kept in L0 (Redis)
    sqlite_synchronous: str = "FULL"
    # Page size of SQLite files created from now on (an existing file keeps its own). Small pages write less to the
    # WAL per message: each commit rewrites every page it touched (docs/performance.md, "Smaller pages").
    sqlite_page_size: int = 1024
    # Auth
    jwt_secret: str = ""  # empty: generated once and kept in data_dir/jwt.secret
    jwt_previous_secrets: str = ""  # comma-separated retired keys: their tokens verify until they expire (rotation)
    admin_key: str = ""  # empty: generated once and kept in data_dir/admin.key
    access_token_ttl_s: int = 3600
    refresh_token_ttl_s: int = 30 * 24 * 3600
    allow_registration: bool = True  # false is registration = closed (kept for older configurations)
    registration: str = "open"  # open | invite (an admin-issued invite token is required) | closed
    auth_cache_ttl_s: float = 5.0  # how long a node trusts a user's token state (revocations on other nodes)
    # Abuse limits of login and registration (per client IP and per account; shared through Redis)
    trusted_proxies: str = ""  # comma-separated IPs/CIDRs whose X-Forwarded-For names the client (HAProxy)
    login_ip_limit: int = 30  # login attempts per client IP per login_ip_window_s
    login_ip_window_s: float = 60.0
    login_failure_limit: int = 10  # failed logins per account per login_failure_window_s
    login_failure_window_s: float = 900.0
    register_ip_limit: int = 10  # registrations per client IP per register_ip_window_s
    register_ip_window_s: float = 3600.0
    hash_concurrency: int = 0  # argon2 hashes at once; 0: from available memory / the hash's memory cost
    hash_wait_s: float = 2.0  # how long a login/registration waits for a hashing slot before 503
    # What one network peer may cost before it has proved anything (api/limits.py, netlimits.py)
    api_header_timeout_s: float = 10.0  # a REST connection must send a whole request head within this (408)
    api_keepalive_s: int = 5  # an idle REST keep-alive connection is closed after this
    api_body_bytes: int = 1024 * 1024  # request body of an authenticated REST call (admin calls: 4 MiB)
    api_anonymous_body_bytes: int = 16 * 1024  # request body without valid credentials (login, register, ...)
    api_connections_per_ip: int = 256  # open REST connections per client address; 0: no limit (429)
    ws_connections_per_ip: int = 10_000  # open WebSocket connections per client address; 0: no limit (1013)
    connection_limit_exempt: str = ""  # IPs/CIDRs never counted (besides trusted_proxies): a load balancer
    # TLS in Flare itself (https and wss on the same ports); empty: plain, or TLS ends at a proxy (docs/operations.md)
    tls_cert: str = ""  # PEM certificate chain, leaf first
    tls_key: str = ""  # PEM private key of the leaf
    cors_origins: str = ""  # comma-separated origins (https://app.example.com, or *) whose pages may call the API
    # gRPC API (grpc_api/, proto/flare/v1): server-to-server, admin key in the metadata. Off unless a port is given.
    grpc_port: int = 0  # 0: no gRPC server
    grpc_tls_cert: str = ""  # PEM chain, leaf first; with grpc_tls_key: TLS on the gRPC port
    grpc_tls_key: str = ""
    grpc_client_ca: str = ""  # PEM CA bundle: clients must present a certificate it signed (mutual TLS)
    # Message gateway limits
    public_ws_url: str = ""  # what GET /v1/gateways returns; empty: ws(s)://host:ws_port/v1/ws
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
    safety_refresh_s: float = 5.0  # several nodes: how often each checks that it missed no block/mute change
    max_blocks_per_user: int = 10_000  # users one user may block
    group_max_members: int = 10_000  # a group's member limit unless an administrator set the group its own
    # Anti-spam (services/spam.py, docs/operations.md): every rule is off until set
    spam_duplicate_max: int = 0  # the same text from one user at most this often per window (0: off)
    spam_duplicate_window_s: float = 60.0
    spam_link_policy: str = "off"  # off | deny (links to denied domains refused) | allow (only allowed domains)
    spam_max_mentions: int = 0  # mentions in one message at most (0: off)
    spam_new_account_s: float = 0.0  # accounts younger than this are "new" (0: off)
    spam_new_account_per_min: int = 10  # messages a minute a new account may send
    spam_new_account_links: bool = False  # may new accounts send links
    spam_strikes: int = 0  # refused sends within spam_strike_window_s that mute the user everywhere (0: never)
    spam_strike_window_s: float = 600.0
    spam_mute_steps_s: str = "60,600,3600,86400"  # the automatic mutes' lengths, escalating within a day
    idempotency_cache_size: int = 20_000  # most recent sends kept exactly (older ones: filters + log)
    # In-memory caches of the store, least recently used dropped first (re-read when next used)
    group_cache_members: int = 1_000_000  # members of the group member lists, all lists together
    direct_cache_size: int = 100_000  # direct conversations known to exist (their two users)
    sequencer_cache_size: int = 100_000  # per-conversation seq counters (one node; several nodes: Redis)
    last_seen_cache_size: int = 100_000  # users' last-seen times (one node: an older one reads as unknown)
    shutdown_grace_s: float = 5.0
    # Media (docs/media.md): files in the object store, which its own URL chooses (not cache_url)
    object_store_url: str = ""  # empty: data_dir/media; file:///path; s3://[KEY:SECRET@]bucket[/prefix]?endpoint=..
    archive_after_days: float = 90.0  # flare archive run: messages older than this go to the object store
    archive_interval_s: float = 3600.0  # flare worker archive (cluster): seconds between passes
    archive_refresh_s: float = 10.0  # cluster: how often every node re-reads the catalog of archived parts
    archive_grace_s: float = 30.0  # cluster: from recording a part to removing its rows (>= archive_refresh_s)
    media_image_max_bytes: int = 20 * 2**20  # the largest upload of each kind
    media_file_max_bytes: int = 2 * 2**30
    media_voice_max_bytes: int = 20 * 2**20
    media_video_max_bytes: int = 2 * 2**30
    media_image_types: str = "image/jpeg,image/png,image/gif,image/webp"  # MIME allow-lists, of the content
    media_file_types: str = "*"
    media_voice_types: str = "audio/*"
    media_video_types: str = "video/*"
    media_quota_bytes: int = 10 * 2**30  # what one user's media may take (0: no quota)
    media_url_ttl_s: int = 300  # signed download URLs
    media_upload_ttl_s: int = 3600  # presigned part URLs and upload tokens
    media_part_bytes: int = 8 * 2**20  # the part size of uploads in parts (raised to 5 MiB, S3's smallest part)
    media_gc_after_s: float = 24 * 3600.0  # uploads left incomplete this long are collected
    media_gc_interval_s: float = 300.0
    media_strip_gps: bool = True  # remove the EXIF GPS position of uploaded images
    media_thumb_px: int = 320  # thumbnails fit in this square (16..2048)
    media_thumb_format: str = "webp"  # webp | jpeg
    media_moderation_url: str = ""  # an HTTP hook asked about each upload (allow/block); empty: none
    media_moderation_timeout_s: float = 10.0
    media_moderation_secret: str = ""  # signs the hook's requests (Flare-Signature) when set
    # Admin operations (docs/operations.md "Admin")
    system_user: str = "system"  # the sender of broadcast notices (created at start, no credentials)
    broadcast_rate_per_s: float = 200.0  # notices a node appends per second at most (0: no limit)
    broadcast_topic: str = "flare.broadcast"
    broadcast_partitions: int = 4
    broadcast_group: str = "flare-broadcast"
    admin_refresh_s: float = 1.0  # how soon a node applies bans made on another node
    admin_stats_interval_s: float = 5.0  # how often a node writes its statistics sample
    activity_flush_s: float = 5.0  # how often a node records its daily-active users
    # Push providers (backends/push, docs/push.md). A provider without its credentials is disabled.
    apns_key_file: str = ""  # the .p8 token-auth key (APNs); with apns_key_id and apns_team_id
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""  # the app's bundle id, for registrations that carry none
    apns_url: str = ""  # empty: https://api.push.apple.com (api.sandbox.push.apple.com with apns_sandbox)
    apns_sandbox: bool = False
    fcm_service_account_file: str = ""  # the service account's JSON key (FCM HTTP v1)
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = ""  # empty: the service account's token_uri
    webpush_vapid_private_key_file: str = ""  # empty: generated once into data_dir/vapid.pem (one node only)
    webpush_subject: str = ""  # mailto: or https: contact sent to push services; Web Push is off without it
    push_webhook_url: str = ""  # signed POSTs for other providers (JPush, Huawei, ...)
    push_webhook_secret: str = ""
    push_ca_file: str = ""  # extra CA bundle the push adapters trust (a TLS-inspecting proxy, test stand-ins)
    push_timeout_s: float = 10.0
    # Integration webhooks (docs/integration.md): endpoints are set by the admin API; after-events go through the
    # webhooks queue (in-process on one node, Kafka with queue_url: `flare worker webhooks`)
    webhook_topic: str = "flare.webhooks"
    webhook_partitions: int = 12
    webhook_group: str = "flare-webhooks"  # consumer group of `flare worker webhooks`
    webhook_max_tries: int = 8  # sends of one after-event to one endpoint before it is a dead letter
    webhook_backoff_s: float = 2.0  # first retry delay, doubled per try (with jitter), at least Retry-After
    webhook_lease_s: float = 60.0  # a delivery taken by a worker that died before recording it is sent again after
    webhook_history_days: float = 7.0  # how long delivered and dead deliveries are kept
    webhook_refresh_s: float = 2.0  # how soon a node sees endpoints changed on another node
    webhook_ca_file: str = ""  # extra CA bundle trusted for https endpoints (a private CA, test stand-ins)
    # /metrics, /healthz, /readyz on a port of their own (docs/operations.md); 0: on the API port only (serve),
    # a free port, named in the ready line (workers)
    metrics_port: int = 0
    gc_threshold: int = 50_000  # allocations between young-generation collections (0: Python's default)
    # How long a thread may hold the GIL while another waits (0: Python's 5 ms); see app.tune_gil
    gil_switch_interval_ms: float = 1.0
    log_level: str = "INFO"
    # Tracing (docs/operations.md): OpenTelemetry spans over OTLP/HTTP; empty endpoint = off (no tracing work at all)
    otel_endpoint: str = ""  # the collector's base URL (http://127.0.0.1:4318) or its full /v1/traces URL
    otel_sample_ratio: float = 0.1  # share of new traces kept (parent-based: a sampled caller's are always kept)
    otel_service_name: str = "flare"

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
    def registration_mode(self) -> str:
        """``registration``, or ``closed`` when the older ``allow_registration`` is false."""
        return self.registration if self.allow_registration else "closed"

    @property
    def distributed(self) -> bool:
        """Several nodes share Redis (and Kafka + a message store): the cluster wiring is used."""
        return bool(self.cache_url)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def ws_url(self) -> str:
        return self.public_ws_url or f"{'wss' if self.tls else 'ws'}://{self.host}:{self.ws_port}/v1/ws"

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
        if not 0 <= self.gil_switch_interval_ms <= 100:
            raise ValueError("gil_switch_interval_ms must be between 0 (Python's default) and 100")
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        if self.sqlite_page_size not in SQLITE_PAGE_SIZES:
            raise ValueError("sqlite_page_size must be a power of two from 512 to 65536")
        roles = {r.strip() for r in self.roles.split(",") if r.strip()}
        if not roles or not roles <= {"gateway", "api"}:
            raise ValueError("roles must be a comma-separated subset of gateway, api")
        if bool(self.queue_url) != bool(self.cache_url):
            raise ValueError("several nodes need both cache_url (Redis) and queue_url (Kafka), or neither")
        if self.distributed and not self.message_store_url.startswith(("clickhouse://", "chdb://")):
            raise ValueError("with cache_url and queue_url, message_store_url must be clickhouse:// or chdb://")
        try:
            [ipaddress.ip_network(p.strip(), strict=False) for p in self.trusted_proxies.split(",") if p.strip()]
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None
        if self.registration not in ("open", "invite", "closed"):
            raise ValueError("registration must be open, invite or closed")
        for name in ("login_ip_limit", "login_failure_limit", "register_ip_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.hash_concurrency < 0 or self.hash_wait_s < 0 or self.auth_cache_ttl_s < 0:
            raise ValueError("hash_concurrency, hash_wait_s and auth_cache_ttl_s must not be negative")
        if self.api_header_timeout_s <= 0 or self.api_keepalive_s < 1:
            raise ValueError("api_header_timeout_s must be positive and api_keepalive_s at least 1")
        if min(self.api_body_bytes, self.api_anonymous_body_bytes) < 1:
            raise ValueError("api_body_bytes and api_anonymous_body_bytes must be positive")
        if min(self.api_connections_per_ip, self.ws_connections_per_ip) < 0:
            raise ValueError("api_connections_per_ip and ws_connections_per_ip must not be negative (0: no limit)")
        try:
            networks_of(self.connection_limit_exempt)
        except ValueError as exc:
            raise ValueError(f"connection_limit_exempt: {exc}") from None
        if (
            min(self.webhook_max_tries, self.webhook_partitions) < 1
            or min(self.webhook_refresh_s, self.webhook_lease_s) <= 0
        ):
            raise ValueError("webhook_max_tries and webhook_partitions must be at least 1, webhook_*_s positive")
        for name in ("group_cache_members", "direct_cache_size", "sequencer_cache_size", "last_seen_cache_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.otel_sample_ratio <= 1.0:
            raise ValueError("otel_sample_ratio must be between 0 and 1")
        if self.otel_endpoint and not self.otel_endpoint.startswith(("http://", "https://")):
            raise ValueError("otel_endpoint must be an http:// or https:// URL (OTLP over HTTP)")
        for name in ("api_port", "ws_port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be a TCP port")
        if not 0 <= self.grpc_port <= 65535:
            raise ValueError("grpc_port must be a TCP port (0: no gRPC server)")
        if bool(self.grpc_tls_cert) != bool(self.grpc_tls_key):
            raise ValueError("gRPC TLS needs both grpc_tls_cert and grpc_tls_key, or neither")
        if self.grpc_client_ca and not self.grpc_tls_cert:
            raise ValueError("grpc_client_ca (mutual TLS) needs grpc_tls_cert and grpc_tls_key")
        for name in ("grpc_tls_cert", "grpc_tls_key", "grpc_client_ca"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise ValueError(f"{name}: no such file {getattr(self, name)!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both tls_cert and tls_key, or neither")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path!r}")
        self._validate_media()

    def _validate_media(self) -> None:
        for kind in ("image", "file", "voice", "video"):
            if getattr(self, f"media_{kind}_max_bytes") < 1:
                raise ValueError(f"media_{kind}_max_bytes must be at least 1")
        if min(self.media_part_bytes, self.media_thumb_px) < 1:
            raise ValueError("media_part_bytes and media_thumb_px must be at least 1")
        if min(self.media_url_ttl_s, self.media_upload_ttl_s) < 1 or self.media_quota_bytes < 0:
            raise ValueError("media_url_ttl_s and media_upload_ttl_s must be at least 1, media_quota_bytes >= 0")
        if min(self.media_gc_after_s, self.media_gc_interval_s, self.media_moderation_timeout_s) <= 0:
            raise ValueError("media_gc_after_s, media_gc_interval_s and media_moderation_timeout_s must be positive")
        if self.media_thumb_format.lower() not in ("webp", "jpeg"):
            raise ValueError("media_thumb_format must be webp or jpeg")
        if self.object_store_url and not self.object_store_url.startswith(("file:///", "s3://")):
            raise ValueError("object_store_url must be file:///path or s3://bucket?endpoint=...")
        if min(self.archive_interval_s, self.archive_refresh_s) <= 0 or self.archive_after_days < 0:
            raise ValueError("archive_interval_s and archive_refresh_s must be positive, archive_after_days >= 0")
        if self.archive_grace_s < self.archive_refresh_s:
            raise ValueError("archive_grace_s must be at least archive_refresh_s (readers learn of parts first)")

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
