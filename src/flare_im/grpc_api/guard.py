"""Who may call the gRPC API and what is recorded of it: the REST API's admin keys, scopes and audit log
(services/admin.py, api/admin.py), so a key has the same powers, and leaves the same trace, over both.

Reads (``READS``) need a key of scope ``read``; every other rpc changes something and needs ``full`` (none is a
moderation action). Each call of a changing rpc with a valid key is appended to the audit log with its outcome
(200, or the Flare error code), as REST does for its mutating admin requests: action ``gRPC flare.v1.Flare/<rpc>``,
the request as JSON (bounded), the peer's address.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]

from flare_im.api.http import ApiContext
from flare_im.backends.admin.base import FULL, READ, AuditEntry
from flare_im.ids import now_ms
from flare_im.protocol.errors import forbidden
from flare_im.services.admin import ROOT, Principal, covers

ADMIN_KEY_HEADER = "x-admin-key"
READS = frozenset({"GetGroup", "ListMembers", "GetHistory", "Subscribe"})
AUDIT_DETAIL = 2000  # characters of a request kept in the audit log (as REST keeps of a body)


class AdminGuard:
    def __init__(self, api: ApiContext, service: str) -> None:
        self._api = api
        self._service = service

    async def principal(self, rpc: str, metadata: Iterable[tuple[str, Any]] | None, peer: str) -> Principal:
        """The caller's key, when its scope covers ``rpc``: FlareError 401 (no or unknown key) or 403 (scope)."""
        key = next((v for k, v in metadata or () if k == ADMIN_KEY_HEADER), None)
        key = key if isinstance(key, str) else None
        admin = self._api.admin
        if admin is None:  # no admin store: the one configured key, with every power
            self._api.auth.check_admin_key(key)
            return Principal(ROOT, FULL)
        principal = await admin.keys.identify(key)
        needed = READ if rpc in READS else FULL
        if not covers(principal.scope, needed):
            refusal = forbidden(f"this admin key's scope is {principal.scope}; {rpc} needs {needed}")
            await self.audit(principal, rpc, None, int(refusal.code), peer)
            raise refusal
        return principal

    async def audit(self, principal: Principal, rpc: str, request: Any, status: int, peer: str) -> None:
        admin = self._api.admin
        if admin is None or rpc in READS:
            return
        detail = "" if request is None else json_format.MessageToJson(request, indent=None)[:AUDIT_DETAIL]
        entry = AuditEntry(
            0, now_ms(), principal.key_id, f"gRPC {self._service}/{rpc}", "", status, detail, _host(peer)
        )
        await admin.store.append_audit(entry)


def _host(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address."""
    _, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0] if rest.count(":") >= 1 else rest
    return host.strip("[]")
