"""Users' safety on the hot paths (U2, U3): who blocks whom, and who is muted in which group.

Every node keeps all blocks and all current group mutes in memory (``SafetyCache``) and the send, typing and
presence paths ask it synchronously: a direct message costs one dict lookup, a group message one more only when
the group has a mute; with no block and no mute anywhere each check is one test of an empty dict.

The cache changes at once on the node that made a change. With several nodes the node also publishes a change
notice on the node bus (channel ``safety``), and each other node re-reads that one user's blocks or that one
group's mutes; a notice the bus lost (it is at-most-once) is made good by the revision poll: every
``refresh_s`` each node reads the port's revision and reloads everything when it moved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import msgspec

from flare_im.aio import Repeater
from flare_im.backends.bus.base import NodeBus
from flare_im.backends.safety.base import EVERYONE, BlockStore, GroupMute, MuteStore, SpamStore
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError

log = logging.getLogger(__name__)

CHANNEL = "safety"  # the node-bus name every node subscribes to for change notices
ADMIN_ROLES = ("owner", "admin")
BLOCKS, MUTES, SPAM = "blocks", "mutes", "spam"


class ChangeNotice(msgspec.Struct, array_like=True):
    scope: str  # BLOCKS (key: the blocking user) | MUTES (key: the group's conversation)
    key: str


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ChangeNotice).decode


def blocked_error() -> FlareError:
    return FlareError(ErrorCode.FORBIDDEN, "this user does not accept messages from you", detail={"reason": "blocked"})


def blocking_error() -> FlareError:
    return FlareError(
        ErrorCode.FORBIDDEN, "you block this user: unblock them to send them messages", detail={"reason": "blocking"}
    )


def muted_error(until: int, *, everyone: bool) -> FlareError:
    if everyone:
        return FlareError(
            ErrorCode.FORBIDDEN,
            "only the owner and admins may send in this group now",
            detail={"reason": "muted_all", "until": until},
        )
    return FlareError(ErrorCode.FORBIDDEN, "you are muted in this group", detail={"reason": "muted", "until": until})


class SafetyCache:
    """This node's copy of every block and every current group mute, and the checks the hot paths make."""

    def __init__(
        self,
        blocks: BlockStore,
        mutes: MuteStore,
        *,
        role_of: Callable[[str, str], str | None],
        spam: SpamStore | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``role_of(conv, uid)``: a member's role from the membership cache (None if unknown there: then the
        sender is not an admin); ``clock``: epoch ms (tests pass one they move by hand)."""
        self._blocks_store = blocks
        self._mutes_store = mutes
        self._role_of = role_of
        self._clock = clock
        self._blocks: dict[str, set[str]] = {}  # blocker -> the users it blocks
        self._blocked_by: dict[str, set[str]] = {}  # blocked user -> who blocks it
        self._mutes: dict[str, dict[str, int]] = {}  # conversation -> member (or EVERYONE) -> until (epoch ms)
        self._spam_store = spam
        self.domain_rules: dict[str, str] = {}  # anti-spam link rules: domain -> allow | deny
        self._spam_mutes: dict[str, int] = {}  # users the anti-spam muted everywhere -> until (epoch ms)
        self.revision = -1

    async def load(self) -> None:
        """Read everything again (at start, and when the revision moved)."""
        revision = await self._blocks_store.revision()
        blocks: dict[str, set[str]] = {}
        blocked_by: dict[str, set[str]] = {}
        for b in await self._blocks_store.all_blocks():
            blocks.setdefault(b.uid, set()).add(b.target)
            blocked_by.setdefault(b.target, set()).add(b.uid)
        mutes: dict[str, dict[str, int]] = {}
        for m in await self._mutes_store.all_mutes(self._clock()):
            mutes.setdefault(m.conv, {})[m.uid] = m.until
        self._blocks, self._blocked_by, self._mutes = blocks, blocked_by, mutes
        await self._load_spam()
        self.revision = revision

    async def _load_spam(self) -> None:
        if self._spam_store is not None:
            self.domain_rules = await self._spam_store.domain_rules()
            self._spam_mutes = await self._spam_store.user_mutes(self._clock())

    async def reload_if_moved(self) -> None:
        if await self._blocks_store.revision() != self.revision:
            await self.load()

    # ------------------------------------------------------------------ changes

    def set_blocks(self, uid: str, targets: Iterable[str]) -> None:
        """``uid`` now blocks exactly ``targets``."""
        new = set(targets)
        old = self._blocks.get(uid, set())
        for gone in old - new:
            by = self._blocked_by.get(gone)
            if by is not None:
                by.discard(uid)
                if not by:
                    del self._blocked_by[gone]
        for added in new - old:
            self._blocked_by.setdefault(added, set()).add(uid)
        if new:
            self._blocks[uid] = new
        else:
            self._blocks.pop(uid, None)

    def set_mutes(self, conv: str, mutes: Iterable[GroupMute]) -> None:
        """The group ``conv`` now has exactly ``mutes``."""
        found = {m.uid: m.until for m in mutes}
        if found:
            self._mutes[conv] = found
        else:
            self._mutes.pop(conv, None)

    async def reload(self, scope: str, key: str) -> None:
        """Re-read one user's blocks or one group's mutes (another node changed them)."""
        if scope == BLOCKS:
            blocks, _ = await self._blocks_store.blocks_of(key)
            self.set_blocks(key, (b.target for b in blocks))
        elif scope == MUTES:
            self.set_mutes(key, await self._mutes_store.mutes_of(key, self._clock()))
        elif scope == SPAM:
            await self._load_spam()

    def set_spam_mute(self, uid: str, until: int) -> None:
        if until:
            self._spam_mutes[uid] = until
        else:
            self._spam_mutes.pop(uid, None)

    def spam_muted(self, uid: str) -> int:
        """Until when the anti-spam mutes ``uid`` everywhere (epoch ms; 0: not muted)."""
        until = self._spam_mutes.get(uid, 0) if self._spam_mutes else 0
        if until and until <= self._clock():
            del self._spam_mutes[uid]
            return 0
        return until

    # ------------------------------------------------------------------ lookups (no await: hot paths)

    def blocks(self, uid: str, target: str) -> bool:
        """Does ``uid`` block ``target``."""
        targets = self._blocks.get(uid)
        return targets is not None and target in targets

    def blocked_by(self, uid: str) -> set[str] | None:
        """Who blocks ``uid`` (None: nobody)."""
        return self._blocked_by.get(uid)

    def check_send(self, sender: str, conv: str, recipients: list[str]) -> None:
        """Raise 403 when ``sender`` may not send to ``conv`` now: a direct peer blocks it (or it blocks the
        peer), or it is muted in the group (alone, or with everyone but owner and admins)."""
        if conv.startswith("d:"):
            self.check_direct(sender, conv, recipients)
            return
        mutes = self._mutes.get(conv)
        if not mutes:
            return
        now = self._clock()
        until = mutes.get(sender)
        if until is not None and until > now:
            raise muted_error(until, everyone=False)
        everyone = mutes.get(EVERYONE)
        if everyone is not None and everyone > now and self._role_of(conv, sender) not in ADMIN_ROLES:
            raise muted_error(everyone, everyone=True)

    def check_direct(self, sender: str, conv: str, recipients: list[str]) -> None:
        """Raise 403 when ``conv`` is a direct conversation and either of its two users blocks the other."""
        if self._blocks and conv.startswith("d:") and len(recipients) == 2:
            peer = recipients[1] if recipients[0] == sender else recipients[0]
            if self.blocks(peer, sender):
                raise blocked_error()
            if self.blocks(sender, peer):
                raise blocking_error()

    def audience(self, sender: str, uids: list[str]) -> list[str]:
        """``uids`` without those who block ``sender`` (typing notices)."""
        by = self._blocked_by.get(sender)
        if not by:
            return uids
        return [u for u in uids if u not in by]

    def mute_of(self, conv: str, uid: str) -> int:
        """Until when ``uid`` is muted in ``conv`` (epoch ms; 0: not muted)."""
        until = self._mutes.get(conv, {}).get(uid, 0)
        return until if until > self._clock() else 0


class SafetySync:
    """Keeps the caches of several nodes in step: change notices over the node bus, and the revision poll."""

    def __init__(self, cache: SafetyCache, bus: NodeBus | None, *, refresh_s: float) -> None:
        self._cache = cache
        self._bus = bus
        self._tasks: set[asyncio.Task[None]] = set()
        self._poll = Repeater(cache.reload_if_moved, refresh_s, what="reloading blocks and mutes")

    async def start(self) -> None:
        if self._bus is not None:
            await self._bus.subscribe(CHANNEL, self._on_payload)
            self._poll.start()

    async def close(self) -> None:
        await self._poll.close()
        for task in list(self._tasks):
            task.cancel()
        if self._bus is not None:
            await self._bus.close()

    def changed(self, scope: str, key: str) -> None:
        """This node changed ``key``'s blocks or mutes (its cache already has them): tell the others."""
        if self._bus is not None:
            self._bus.publish(CHANNEL, _encode(ChangeNotice(scope, key)))

    def _on_payload(self, payload: bytes) -> None:
        notice = _decode(payload)
        task = asyncio.ensure_future(self._reload(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self, notice: ChangeNotice) -> None:
        try:
            await self._cache.reload(notice.scope, notice.key)
        except Exception:  # the revision poll catches up
            log.warning("reloading %s of %s failed; the next revision poll retries", notice.scope, notice.key)
