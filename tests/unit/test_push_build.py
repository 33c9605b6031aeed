"""backends/push/build.py: which push adapters the settings build, and the one line saying why each other is off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flare_im.backends.push.apns import ApnsConfig
from flare_im.backends.push.build import (
    disabled_providers,
    provider_configs,
    providers_from_settings,
    vapid_key_from_settings,
)
from flare_im.backends.push.fcm import FcmConfig
from flare_im.backends.push.webpush import VapidKey
from flare_im.config import Settings


def _p8(path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path)


def _service_account(path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    account = {
        "type": "service_account",
        "project_id": "p1",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "push@p1.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(account))
    return str(path)


def test_without_credentials_every_provider_is_disabled_with_its_reason(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    assert providers_from_settings(settings) == {}
    reasons = disabled_providers(settings)
    assert set(reasons) == {"apns", "fcm", "webpush", "webhook"}
    assert "FLARE_APNS_KEY_FILE" in reasons["apns"]
    assert "FLARE_FCM_SERVICE_ACCOUNT_FILE" in reasons["fcm"]
    assert "FLARE_WEBPUSH_SUBJECT" in reasons["webpush"]
    assert "FLARE_PUSH_WEBHOOK_URL" in reasons["webhook"]


async def test_every_provider_is_built_from_its_settings(tmp_path: Path) -> None:
    settings = Settings.load(
        environ={
            "FLARE_DATA_DIR": str(tmp_path),
            "FLARE_APNS_KEY_FILE": _p8(tmp_path / "AuthKey.p8"),
            "FLARE_APNS_KEY_ID": "KEY1234567",
            "FLARE_APNS_TEAM_ID": "TEAM123456",
            "FLARE_APNS_TOPIC": "im.flare.app",
            "FLARE_APNS_SANDBOX": "true",
            "FLARE_FCM_SERVICE_ACCOUNT_FILE": _service_account(tmp_path / "sa.json"),
            "FLARE_WEBPUSH_SUBJECT": "mailto:ops@flare.example",
            "FLARE_PUSH_WEBHOOK_URL": "https://relay.flare.example/push",
            "FLARE_PUSH_WEBHOOK_SECRET": "s3cret",
            "FLARE_PUSH_TIMEOUT_S": "3",
        }
    )
    assert disabled_providers(settings) == {}
    configs = provider_configs(settings)[0]
    apns = configs["apns"]
    assert isinstance(apns, ApnsConfig)
    assert (apns.url, apns.topic, apns.key_id, apns.team_id, apns.timeout_s) == (
        "https://api.sandbox.push.apple.com",
        "im.flare.app",
        "KEY1234567",
        "TEAM123456",
        3.0,
    )
    fcm = configs["fcm"]
    assert isinstance(fcm, FcmConfig)
    assert (fcm.account.project_id, fcm.url, fcm.token_url) == ("p1", "https://fcm.googleapis.com", "")
    providers = providers_from_settings(settings)
    try:
        assert {name: p.name for name, p in providers.items()} == {
            "apns": "apns",
            "fcm": "fcm",
            "webpush": "webpush",
            "webhook": "webhook",
        }
    finally:
        for provider in providers.values():
            await provider.close()


def test_apns_url_defaults_to_production_and_can_be_pointed_elsewhere(tmp_path: Path) -> None:
    base = Settings(apns_key_file=_p8(tmp_path / "k.p8"), apns_key_id="K", apns_team_id="T", data_dir=str(tmp_path))
    assert provider_configs(base)[0]["apns"].url == "https://api.push.apple.com"  # type: ignore[union-attr]
    local = base.replace(apns_url="https://127.0.0.1:9443", apns_sandbox=True)
    assert provider_configs(local)[0]["apns"].url == "https://127.0.0.1:9443"  # type: ignore[union-attr]


def test_half_configured_or_unreadable_credentials_say_what_is_wrong(tmp_path: Path) -> None:
    reasons = disabled_providers(
        Settings(
            data_dir=str(tmp_path),
            apns_key_file=str(tmp_path / "AuthKey.p8"),
            apns_team_id="T",
            fcm_service_account_file=str(tmp_path / "missing.json"),
            webpush_subject="ops@flare.example",
            push_webhook_url="https://relay.flare.example/push",
        )
    )
    assert reasons["apns"] == "FLARE_APNS_KEY_ID not set (the others are)"
    assert reasons["fcm"].startswith("FLARE_FCM_SERVICE_ACCOUNT_FILE:")
    assert "mailto:" in reasons["webpush"]
    assert "FLARE_PUSH_WEBHOOK_SECRET" in reasons["webhook"]
    (tmp_path / "bad.json").write_text(json.dumps({"client_email": "x"}))
    (tmp_path / "AuthKey.p8").write_text("not a key")
    reasons = disabled_providers(
        Settings(
            data_dir=str(tmp_path),
            apns_key_file=str(tmp_path / "AuthKey.p8"),
            apns_key_id="K",
            apns_team_id="T",
            fcm_service_account_file=str(tmp_path / "bad.json"),
        )
    )
    assert "not a .p8 key" in reasons["apns"]
    assert "private_key" in reasons["fcm"]


def test_the_vapid_key_is_generated_in_data_dir_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    key = vapid_key_from_settings(settings)
    assert (tmp_path / "data" / "vapid.pem").exists()
    assert vapid_key_from_settings(settings) == key


def test_an_explicit_vapid_key_file_is_used_and_never_created(tmp_path: Path) -> None:
    key = VapidKey.generate()
    (tmp_path / "vapid.pem").write_bytes(key.private_pem)
    settings = Settings(data_dir=str(tmp_path / "data"), webpush_vapid_private_key_file=str(tmp_path / "vapid.pem"))
    assert vapid_key_from_settings(settings) == key
    missing = settings.replace(webpush_vapid_private_key_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ValueError, match="FLARE_WEBPUSH_VAPID_PRIVATE_KEY_FILE"):
        vapid_key_from_settings(missing)
    assert not (tmp_path / "nope.pem").exists()


def test_a_cluster_needs_an_explicit_shared_vapid_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), cache_url="redis://127.0.0.1:6379/0", webpush_subject="mailto:a@b.c")
    assert "same key" in disabled_providers(settings)["webpush"]
    assert not (tmp_path / "vapid.pem").exists()
