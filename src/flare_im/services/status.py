"""Ephemeral status: typing notices. Forwarded to the conversation's online members, rate-limited,
never stored (a device that was offline simply never sees them)."""

from __future__ import annotations

import time

from flare_im.protocol.frames import TypingNotice
from flare_im.services.conversations import ConversationService
from flare_im.services.router import Fanout
from flare_im.services.safety import SafetyCache

# Remembered (user, conversation) pairs before old ones are dropped: bounds memory under churn.
_MAX_TRACKED = 100_000


class StatusService:
    def __init__(
        self,
        conversations: ConversationService,
        fanout: Fanout,
        *,
        typing_interval_s: float,
        safety: SafetyCache | None = None,
    ) -> None:
        self._conversations = conversations
        self._safety = safety  # a user's typing does not reach those who block it
        self._fanout = fanout
        self._interval = typing_interval_s
        self._last_typing: dict[tuple[str, str], float] = {}

    async def typing(self, user: str, device: str, conv: str) -> bool:
        """Forward "``user`` is typing" to the other members of ``conv`` (FlareError 403 for a non-member).
        At most one notice per user and conversation per interval: returns False when this one was
        dropped for that reason."""
        recipients = await self._conversations.recipients_for_send(user, conv)
        now = time.monotonic()
        key = (user, conv)
        last = self._last_typing.get(key)
        if last is not None and now - last < self._interval:
            return False
        if len(self._last_typing) >= _MAX_TRACKED:
            cutoff = now - self._interval
            self._last_typing = {k: t for k, t in self._last_typing.items() if t >= cutoff}
        self._last_typing[key] = now
        others = [u for u in recipients if u != user]
        if self._safety is not None:
            others = self._safety.audience(user, others)
        self._fanout.deliver_typing(others, TypingNotice(conv=conv, user=user, device=device))
        return True
