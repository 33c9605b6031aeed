"""The push adapters the settings configure, and why the others are off.

``providers_from_settings`` builds one adapter per provider whose credentials are set; ``disabled_providers``
names each provider that is not, with one line saying what is missing (the notification service logs it once
at start and records that provider's jobs as dropped with it). ``vapid_key_from_settings`` is the Web Push key
(its public half is what browsers subscribe with): the explicit ``webpush_vapid_private_key_file``, or one
generated on first start into ``data_dir/vapid.pem`` like the JWT secret. Several nodes must share one key, so
with ``cache_url`` (a cluster) the file must be set explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flare_im.backends.push.apns import PRODUCTION_URL, SANDBOX_URL, ApnsConfig, ApnsProvider
from flare_im.backends.push.base import PushProvider
from flare_im.backends.push.fcm import FcmConfig, FcmProvider, ServiceAccount
from flare_im.backends.push.webhook import WebhookConfig, WebhookProvider
from flare_im.backends.push.webpush import VapidKey, WebPushConfig, WebPushProvider, load_or_create_vapid_key
from flare_im.config import Settings

PROVIDERS = ("apns", "fcm", "webpush", "webhook")
ProviderConfig = ApnsConfig | FcmConfig | WebPushConfig | WebhookConfig


def vapid_key_from_settings(settings: Settings) -> VapidKey:
    """The VAPID key; ValueError (naming the setting to fix) if it cannot be had."""
    if settings.webpush_vapid_private_key_file:
        path = Path(settings.webpush_vapid_private_key_file)
        try:
            return load_or_create_vapid_key(path, create=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"FLARE_WEBPUSH_VAPID_PRIVATE_KEY_FILE={path}: {exc}") from None
    if settings.distributed:
        raise ValueError(
            "set FLARE_WEBPUSH_VAPID_PRIVATE_KEY_FILE: with several nodes every node must sign with the same key"
        )
    try:
        return load_or_create_vapid_key(Path(settings.data_dir) / "vapid.pem")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{Path(settings.data_dir) / 'vapid.pem'}: {exc}") from None


def _apns(settings: Settings) -> ApnsConfig:
    given = {
        "FLARE_APNS_KEY_FILE": settings.apns_key_file,
        "FLARE_APNS_KEY_ID": settings.apns_key_id,
        "FLARE_APNS_TEAM_ID": settings.apns_team_id,
    }
    missing = [name for name, value in given.items() if not value]
    if len(missing) == len(given):
        raise ValueError("no credentials (set FLARE_APNS_KEY_FILE, FLARE_APNS_KEY_ID and FLARE_APNS_TEAM_ID)")
    if missing:
        raise ValueError(f"{', '.join(missing)} not set (the others are)")
    try:
        key = Path(settings.apns_key_file).read_bytes()
    except OSError as exc:
        raise ValueError(f"FLARE_APNS_KEY_FILE: {exc}") from None
    if b"PRIVATE KEY" not in key:
        raise ValueError(f"FLARE_APNS_KEY_FILE={settings.apns_key_file} is not a .p8 key (PEM)")
    url = settings.apns_url or (SANDBOX_URL if settings.apns_sandbox else PRODUCTION_URL)
    return ApnsConfig(
        key,
        settings.apns_key_id,
        settings.apns_team_id,
        topic=settings.apns_topic,
        url=url,
        ca_file=settings.push_ca_file,
        timeout_s=settings.push_timeout_s,
    )


def _fcm(settings: Settings) -> FcmConfig:
    if not settings.fcm_service_account_file:
        raise ValueError("no credentials (set FLARE_FCM_SERVICE_ACCOUNT_FILE to the service account's JSON key)")
    try:
        account = ServiceAccount.from_json(json.loads(Path(settings.fcm_service_account_file).read_text()))
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"FLARE_FCM_SERVICE_ACCOUNT_FILE: {exc}") from None
    return FcmConfig(
        account,
        url=settings.fcm_url,
        token_url=settings.fcm_token_url,
        ca_file=settings.push_ca_file,
        timeout_s=settings.push_timeout_s,
    )


def _webpush(settings: Settings) -> WebPushConfig:
    if not settings.webpush_subject:
        raise ValueError("set FLARE_WEBPUSH_SUBJECT (mailto: or https: URL push services can reach you at)")
    if not settings.webpush_subject.startswith(("mailto:", "https:")):
        raise ValueError("FLARE_WEBPUSH_SUBJECT must be a mailto: or https: URL")
    return WebPushConfig(
        vapid_key_from_settings(settings),
        settings.webpush_subject,
        ca_file=settings.push_ca_file,
        timeout_s=settings.push_timeout_s,
    )


def _webhook(settings: Settings) -> WebhookConfig:
    if not settings.push_webhook_url:
        raise ValueError("no URL (set FLARE_PUSH_WEBHOOK_URL and FLARE_PUSH_WEBHOOK_SECRET)")
    if not settings.push_webhook_secret:
        raise ValueError("set FLARE_PUSH_WEBHOOK_SECRET: the webhook's requests are signed with it")
    return WebhookConfig(
        settings.push_webhook_url,
        settings.push_webhook_secret,
        ca_file=settings.push_ca_file,
        timeout_s=settings.push_timeout_s,
    )


_CONFIGS: dict[str, Callable[[Settings], ProviderConfig]] = {
    "apns": _apns,
    "fcm": _fcm,
    "webpush": _webpush,
    "webhook": _webhook,
}


def provider_configs(settings: Settings) -> tuple[dict[str, ProviderConfig], dict[str, str]]:
    """(each configured provider's config, each other provider's reason), over ``PROVIDERS``."""
    configs: dict[str, ProviderConfig] = {}
    disabled: dict[str, str] = {}
    for name in PROVIDERS:
        try:
            configs[name] = _CONFIGS[name](settings)
        except ValueError as exc:
            disabled[name] = str(exc)
    return configs, disabled


def disabled_providers(settings: Settings) -> dict[str, str]:
    """Each provider that ``providers_from_settings`` does not build, and why, e.g.
    ``{"fcm": "no credentials (set FLARE_FCM_SERVICE_ACCOUNT_FILE ...)"}``."""
    return provider_configs(settings)[1]


def providers_from_settings(settings: Settings) -> dict[str, PushProvider]:
    """One adapter per provider whose credentials are set (keyed by ``PushProvider.name``); the caller closes
    them. A provider missing here is in ``disabled_providers``."""
    providers: dict[str, PushProvider] = {}
    for name, config in provider_configs(settings)[0].items():
        if isinstance(config, ApnsConfig):
            providers[name] = ApnsProvider(config)
        elif isinstance(config, FcmConfig):
            providers[name] = FcmProvider(config)
        elif isinstance(config, WebPushConfig):
            providers[name] = WebPushProvider(config)
        else:
            providers[name] = WebhookProvider(config)
    return providers
