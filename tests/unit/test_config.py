"""Settings (src/flare_im/config.py): defaults < FLARE_* environment variables < overrides."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from flare_im.config import Settings


def test_defaults() -> None:
    s = Settings.load(environ={})
    assert s == Settings()
    assert s.host == "127.0.0.1"
    assert s.api_port == 8080
    assert s.ws_port == 8081
    assert s.node_id == 0
    assert s.allow_registration is True
    assert s.max_frame_bytes == 64 * 1024
    assert s.heartbeat_s == 25.0
    assert s.sqlite_synchronous == "FULL"


def test_derived_defaults() -> None:
    s = Settings.load(environ={}, overrides={"data_dir": "/var/lib/flare", "host": "0.0.0.0", "ws_port": 9001})
    assert s.sqlite_path == "/var/lib/flare/flare.db"
    assert s.effective_database_url == "sqlite:////var/lib/flare/flare.db"
    assert s.effective_message_store_url == s.effective_database_url
    assert s.ws_url == "ws://0.0.0.0:9001/v1/ws"

    s = Settings.load(
        environ={},
        overrides={
            "database_url": "postgresql://db/flare",
            "message_store_url": "clickhouse://ch/flare",
            "public_ws_url": "wss://chat.example.com/v1/ws",
        },
    )
    assert s.effective_database_url == "postgresql://db/flare"
    assert s.effective_message_store_url == "clickhouse://ch/flare"
    assert s.ws_url == "wss://chat.example.com/v1/ws"

    # Relational data in PostgreSQL: the message log stays in the embedded file until it has its own URL.
    s = Settings.load(environ={}, overrides={"data_dir": "/d", "database_url": "postgresql://db/flare"})
    assert s.effective_message_store_url == "sqlite:////d/flare.db"


def test_env_overrides_with_type_coercion() -> None:
    env = {
        "FLARE_HOST": "10.0.0.1",
        "FLARE_API_PORT": "9000",
        "FLARE_NODE_ID": "1023",
        "FLARE_HEARTBEAT_S": "1.5",
        "FLARE_RATE_LIMIT_PER_S": "7",
        "FLARE_ALLOW_REGISTRATION": "false",
        "FLARE_JWT_SECRET": "s3cret",
        "FLARE_SQLITE_SYNCHRONOUS": "normal",
    }
    s = Settings.load(environ=env)
    assert s.host == "10.0.0.1"
    assert s.api_port == 9000
    assert type(s.api_port) is int
    assert s.node_id == 1023
    assert s.heartbeat_s == 1.5
    assert s.rate_limit_per_s == 7.0
    assert type(s.rate_limit_per_s) is float
    assert s.allow_registration is False
    assert s.jwt_secret == "s3cret"
    assert s.sqlite_synchronous == "normal"
    assert s.ws_port == 8081  # untouched fields keep their default


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        (" On ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_env_bool_coercion(raw: str, expected: bool) -> None:
    s = Settings.load(environ={"FLARE_ALLOW_REGISTRATION": raw})
    assert s.allow_registration is expected


def test_every_field_has_an_env_variable() -> None:
    samples: dict[str, Any] = {"int": ("7", 7), "float": ("0.25", 0.25), "bool": ("yes", True), "str": ("v", "v")}
    env: dict[str, str] = {}
    expected: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "sqlite_synchronous":
            continue
        raw, value = samples[str(f.type)]
        checked = {
            "roles": "gateway",
            "message_store_url": "chdb:///tmp/x",
            "registration": "invite",
            "trusted_proxies": "10.0.0.0/8",
            "connection_limit_exempt": "192.168.0.0/16",
            "object_store_url": "file:///tmp/x",
            "media_thumb_format": "jpeg",
            "otel_endpoint": "http://127.0.0.1:4318",
            # files that must exist (this one stands in for the certificates, the keys and the CA)
            "tls_cert": __file__,
            "tls_key": __file__,
            "grpc_tls_cert": __file__,
            "grpc_tls_key": __file__,
            "grpc_client_ca": __file__,
        }
        if f.name in checked:  # values the settings check
            raw = value = checked[f.name]
        if f.name == "sqlite_page_size":  # a power of two
            raw, value = "2048", 2048
        env[f"FLARE_{f.name.upper()}"] = raw
        expected[f.name] = value
    env["FLARE_NOT_A_SETTING"] = "ignored"
    s = Settings.load(environ=env)
    assert {name: getattr(s, name) for name in expected} == expected


def test_overrides_win_over_env() -> None:
    env = {"FLARE_API_PORT": "9000", "FLARE_HOST": "10.0.0.1", "FLARE_LOG_LEVEL": "DEBUG"}
    s = Settings.load({"api_port": 7000, "host": None, "log_level": "WARNING"}, environ=env)
    assert s.api_port == 7000
    assert s.host == "10.0.0.1"  # a None override leaves the env value
    assert s.log_level == "WARNING"


def test_load_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLARE_WS_PORT", "9123")
    assert Settings.load().ws_port == 9123
    assert Settings.load(environ={}).ws_port == 8081


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("FLARE_API_PORT", "abc"),
        ("FLARE_API_PORT", "80.5"),
        ("FLARE_NODE_ID", ""),
        ("FLARE_HEARTBEAT_S", "fast"),
    ],
)
def test_env_values_that_do_not_parse_raise(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.load(environ={name: raw})


@pytest.mark.parametrize(
    ("name", "raw", "match"),
    [
        ("FLARE_NODE_ID", "1024", "node_id"),
        ("FLARE_NODE_ID", "-1", "node_id"),
        ("FLARE_API_PORT", "65536", "api_port"),
        ("FLARE_WS_PORT", "-1", "ws_port"),
        ("FLARE_SQLITE_SYNCHRONOUS", "SOMETIMES", "sqlite_synchronous"),
        ("FLARE_SQLITE_PAGE_SIZE", "3000", "sqlite_page_size"),
        ("FLARE_SQLITE_PAGE_SIZE", "256", "sqlite_page_size"),
    ],
)
def test_env_values_out_of_range_raise(name: str, raw: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Settings.load(environ={name: raw})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"node_id": 5000}, "node_id"),
        ({"ws_port": 70_000}, "ws_port"),
        ({"sqlite_synchronous": "fast"}, "sqlite_synchronous"),
        ({"sqlite_page_size": 131072}, "sqlite_page_size"),
    ],
)
def test_invalid_overrides_raise(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Settings.load(overrides, environ={})


def test_settings_are_frozen_and_replace_makes_a_copy() -> None:
    s = Settings()
    t = s.replace(api_port=1234)
    assert (s.api_port, t.api_port) == (8080, 1234)
    with pytest.raises(AttributeError):
        s.api_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"FLARE_ROLES": "gateway,mail"}, "roles"),
        ({"FLARE_ROLES": ""}, "roles"),
        ({"FLARE_CACHE_URL": "redis://x"}, "both"),
        ({"FLARE_QUEUE_URL": "kafka://x"}, "both"),
        ({"FLARE_CACHE_URL": "redis://x", "FLARE_QUEUE_URL": "kafka://x"}, "clickhouse"),
    ],
)
def test_cluster_settings_are_checked(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings.load(environ=env)


def test_cluster_settings() -> None:
    s = Settings.load(
        environ={
            "FLARE_CACHE_URL": "redis://r",
            "FLARE_QUEUE_URL": "kafka://k:9092",
            "FLARE_MESSAGE_STORE_URL": "clickhouse://c:8123/flare",
            "FLARE_ROLES": "gateway",
        }
    )
    assert s.distributed
    assert s.role_set == {"gateway"}
    assert not Settings.load(environ={}).distributed
