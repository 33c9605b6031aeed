"""What an admin does to a user (issue U8): ban and unban, kick one device, revoke every token, delete.

- **Ban**: stored (the ``admin`` component), refused at once on this node and within ``admin_refresh_s`` on the
  others (services/admin.py), and every connected device of the user, on every node, gets a ``kick`` frame and
  the close code 4010 with the reason. Nothing else changes: memberships, messages and tokens stay, so an
  **unban** restores the account as it was (a refresh token presented while banned is used up, though).
- **Kick one device**: its connection closes with 4011; the user's other devices stay connected.
- **Revoke tokens**: every token of the user is revoked and every device is closed with 4012.
- **Delete**: the account is refused for good (close code 4013), its tokens revoked, its profile and credentials
  erased (the id stays taken), its push registrations removed; with ``messages=recall`` every message it sent is
  recalled (an operation event in each conversation, so devices replaying the log converge), with ``keep`` they
  stay under the id.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from flare_im.backends.admin.base import BANNED, DELETED, AdminStore, Ban
from flare_im.backends.message_log.base import GONE_STATES, Change, MessageLog
from flare_im.backends.relational.base import DeviceStore, MembershipStore
from flare_im.identity import check_id
from flare_im.ids import now_ms
from flare_im.protocol.errors import CloseCode, ErrorCode, FlareError, not_found
from flare_im.services.admin import AccountGate, Kick, check_reason
from flare_im.services.auth import AuthService
from flare_im.services.conversations import ConversationService
from flare_im.services.message_kinds import is_content
from flare_im.services.router import MessageRouter
from flare_im.services.users import UserService

log = logging.getLogger(__name__)
PAGE = 500  # messages read per page when recalling a deleted user's messages


@dataclass(frozen=True, slots=True)
class Deleted:
    uid: str
    kicked: int
    recalled: int


class AdminUsers:
    def __init__(
        self,
        *,
        store: AdminStore,
        gate: AccountGate,
        auth: AuthService,
        users: UserService,
        kick: Kick,
        memberships: MembershipStore,
        devices: DeviceStore,
        conversations: ConversationService,
        log_: MessageLog,
        router: MessageRouter,
        system_user: str,
    ) -> None:
        self._store = store
        self._gate = gate
        self._auth = auth
        self._users = users
        self._kick = kick
        self._memberships = memberships
        self._devices = devices
        self._conversations = conversations
        self._log = log_
        self._router = router
        self._system = system_user

    async def _existing(self, uid: str) -> str:
        uid = check_id(uid, "user id")
        await self._users.get(uid)  # 404 when there is no such user
        ban = self._gate.ban_of(uid)
        if ban is not None and ban.kind == DELETED:
            raise FlareError(ErrorCode.GONE, f"the account {uid!r} was deleted")
        return uid

    async def ban(self, uid: str, reason: str, key_id: str) -> tuple[Ban, int]:
        """Ban ``uid``; returns the ban and how many of its connections this node closed."""
        uid = await self._existing(uid)
        ban = Ban(uid, BANNED, check_reason(reason), now_ms(), key_id)
        await self._store.put_ban(ban)
        self._gate.refuse(ban)
        closed = await self._kick(uid, None, CloseCode.BANNED, _close_reason("banned", ban.reason))
        return ban, closed

    async def unban(self, uid: str) -> str:
        uid = check_id(uid, "user id")
        if await self._store.delete_ban(uid) is None:
            raise not_found(f"{uid!r} is not banned")
        self._gate.allow(uid)
        return uid

    async def kick(self, uid: str, device: str | None) -> int:
        uid = await self._existing(uid)
        return await self._kick(uid, device, CloseCode.KICKED, "disconnected by an admin")

    async def revoke(self, uid: str) -> int:
        """Revoke every token of ``uid`` and close its connections."""
        uid = await self._users.revoke_tokens_by_admin(uid)
        return await self._kick(uid, None, CloseCode.TOKENS_REVOKED, "every token of the user was revoked")

    async def delete(self, uid: str, *, recall: bool, key_id: str) -> Deleted:
        uid = await self._existing(uid)
        if uid == self._system:
            raise FlareError(ErrorCode.FORBIDDEN, "the system user sends notices: it cannot be deleted")
        ban = Ban(uid, DELETED, "account deleted", now_ms(), key_id)
        await self._store.put_ban(ban)
        self._gate.refuse(ban)
        kicked = await self._kick(uid, None, CloseCode.ACCOUNT_DELETED, "the account was deleted")
        await self._auth.revoke_all(uid)
        for target in await self._devices.push_targets([uid]):
            await self._devices.delete_push_target(uid, target.device)
        recalled = await self._recall_all(uid) if recall else 0
        await self._store.erase_user(uid)
        return Deleted(uid, kicked, recalled)

    async def _recall_all(self, uid: str) -> int:
        """Recall every message ``uid`` sent that is not gone yet, conversation by conversation."""
        recalled = 0
        for member in await self._memberships.list_user_convs(uid):
            conv = member.conv
            recipients = await self._recipients(conv)
            after = 0
            while True:
                page = await self._log.range(conv, after=after, before=2**63 - 1, limit=PAGE, newest=False)
                for message in page:
                    if message.sender == uid and is_content(message.kind) and message.state not in GONE_STATES:
                        change = Change(target=message.seq, version=message.version + 1, state="recalled")
                        event = {"target": message.seq, "target_id": message.msg_id, "version": change.version}
                        opid = f"admin-recall-{uuid.uuid4().hex}"
                        await self._router.append_op(self._system, conv, opid, "recall", event, change, recipients)
                        recalled += 1
                if len(page) < PAGE:
                    break
                after = page[-1].seq
        return recalled

    async def _recipients(self, conv: str) -> list[str]:
        if conv.startswith("d:"):
            return conv.split(":")[1:]
        return [m.uid for m in await self._conversations.members(conv)]


def _close_reason(what: str, reason: str) -> str:
    return f"{what}: {reason}" if reason else what
