"""Devices' push targets (N2): where the notification service reaches each device of a user.

An app registers its device's token with the provider it uses (APNs, FCM or Web Push, or ``webhook``: the token
of a provider Flare does not speak, which the operator's webhook receiver relays) after login and again whenever
the provider hands it a new one; it removes the registration at logout. Registering a token that
another user or device registered before moves it (one installation, one owner).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

from flare_im.backends.relational.base import DeviceStore, PushTarget
from flare_im.ids import now_ms
from flare_im.protocol.errors import invalid
from flare_im.protocol.frames import DeviceId

PROVIDERS = ("apns", "fcm", "webpush", "webhook")
_APNS_TOKEN = re.compile(r"[0-9a-f]{64,200}")
_FCM_TOKEN = re.compile(r"[A-Za-z0-9_:\-.]{20,4096}")
_WEBHOOK_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII, no spaces: JPush, Huawei, Xiaomi … tokens
# A Web Push endpoint: an https URL of printable ASCII whose host is a name (and port), as the push services give
# (not \S: JSON Schema's and Python's differ on which characters are spaces).
WEBPUSH_ENDPOINT = r"^https://[-.A-Za-z0-9]+(?::[0-9]{1,5})?(?:[/?#][!-~]*)?$"
_WEBPUSH_ENDPOINT = re.compile(WEBPUSH_ENDPOINT)
_BASE64URL = re.compile(r"[A-Za-z0-9_\-]+=*")
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")


class WebPushKeys(msgspec.Struct, forbid_unknown_fields=True):
    p256dh: str
    auth: str


def _check_device(device: str) -> None:
    try:
        msgspec.convert(device, DeviceId)  # the protocol's own rule for the device of `auth`
    except msgspec.ValidationError as exc:
        raise invalid(f"device: {exc} (the device of the connection's auth)") from None


def _normalized_token(provider: str, token: str, keys: dict[str, str] | None) -> tuple[str, str]:
    """(token, keys as JSON) in their stored form, or 422 naming what is wrong."""
    if provider == "apns":
        token = token.lower()
        if not _APNS_TOKEN.fullmatch(token):
            raise invalid("an APNs token is the device token in hex (64-200 hex digits)")
    elif provider == "fcm":
        if not _FCM_TOKEN.fullmatch(token):
            raise invalid("an FCM token is the registration token (20-4096 characters of [A-Za-z0-9_:-.])")
    elif provider == "webhook":
        if not _WEBHOOK_TOKEN.fullmatch(token):
            raise invalid("a webhook token is the device's token at its provider (1-4096 printable ASCII, no spaces)")
    else:
        if not _WEBPUSH_ENDPOINT.fullmatch(token) or len(token) > 2048:
            raise invalid("a Web Push token is the subscription's endpoint, an https URL of at most 2048 characters")
        if keys is None:
            raise invalid("a Web Push registration needs keys {p256dh, auth} from the browser's subscription")
        try:
            parsed = msgspec.convert(keys, WebPushKeys)
        except msgspec.ValidationError as exc:
            raise invalid(f"keys: {exc}") from None
        for name, value in (("p256dh", parsed.p256dh), ("auth", parsed.auth)):
            if not (1 <= len(value) <= 256 and _BASE64URL.fullmatch(value)):
                raise invalid(f"keys.{name} must be base64url, 1-256 characters")
        return token, msgspec.json.encode(parsed).decode()
    if keys is not None:
        raise invalid(f"keys are for Web Push only, not {provider}")
    return token, ""


class DeviceService:
    def __init__(self, devices: DeviceStore, *, on_change: Callable[[str], None] | None = None) -> None:
        """``on_change(uid)``: after a user's registrations changed (the notification service's cache)."""
        self._devices = devices
        self._on_change = on_change

    async def register_push(
        self,
        uid: str,
        device: str,
        provider: str,
        token: str,
        *,
        app_id: str = "",
        keys: dict[str, str] | None = None,
        locale: str = "",
    ) -> PushTarget:
        _check_device(device)
        if provider not in PROVIDERS:
            raise invalid(f"provider must be one of {', '.join(PROVIDERS)}")
        token, keys_json = _normalized_token(provider, token, keys)
        if len(app_id) > 255:
            raise invalid("app_id must be at most 255 characters")
        if locale and not (len(locale) <= 35 and _LOCALE.fullmatch(locale)):
            raise invalid("locale must be a language tag such as en or pt-BR")
        target = PushTarget(uid, device, provider, token, app_id, keys_json, locale, now_ms())
        await self._devices.put_push_target(target)
        self._changed(uid)
        return target

    async def unregister_push(self, uid: str, device: str) -> bool:
        _check_device(device)
        deleted = await self._devices.delete_push_target(uid, device)
        self._changed(uid)
        return deleted

    def _changed(self, uid: str) -> None:
        # A registration may have moved from another user (one token, one owner): everyone's entries are stale.
        if self._on_change is not None:
            self._on_change(uid)

    async def push_targets(self, uid: str) -> list[PushTarget]:
        return await self._devices.push_targets([uid])
