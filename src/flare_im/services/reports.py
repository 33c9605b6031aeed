"""Reports (F1): a user reports a message or a user; an administrator works through the queue and acts.

A report of a message keeps a snapshot of it as it was when reported (its sender may recall it later). Reporting
the same user and message again while the first report is open returns that report: one report, not two.
An administrator closes a report once, with an action: ``none`` (looked at, nothing done), ``dismiss`` (not
abuse), ``recall`` (the reported message is recalled for everyone: an operation event in its conversation, by
the moderator), ``mute`` (the reported message's sender is muted in that group until a time). Banning an account
is its own admin endpoint; a report closed with ``none`` can name it in its note.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable

from flare_im.backends.message_log.base import GONE_STATES, Change, MessageLog
from flare_im.backends.relational.base import UserStore
from flare_im.backends.safety.base import DISMISSED, OPEN, REPORT_STATES, RESOLVED, Report, ReportStore
from flare_im.identity import check_id
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, invalid, not_found
from flare_im.services.blocks import MODERATOR, MuteService
from flare_im.services.conversations import GROUP, ConversationService, parse_conv
from flare_im.services.message_kinds import is_content
from flare_im.services.router import MessageRouter

REASONS = ("spam", "harassment", "hate", "sexual", "violence", "self_harm", "impersonation", "scam", "other")
NONE, DISMISS, RECALL, MUTE = "none", "dismiss", "recall", "mute"
ACTIONS = (NONE, DISMISS, RECALL, MUTE)
MAX_NOTE = 1000


class ReportService:
    def __init__(
        self,
        store: ReportStore,
        users: UserStore,
        conversations: ConversationService,
        log: MessageLog,
        router: MessageRouter,
        mutes: MuteService,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._users = users
        self._conversations = conversations
        self._log = log
        self._router = router
        self._mutes = mutes
        self._clock = clock

    async def report(
        self,
        reporter: str,
        *,
        user: str | None = None,
        conv: str | None = None,
        seq: int | None = None,
        reason: str = "other",
        note: str = "",
    ) -> Report:
        """Report a message (``conv`` and ``seq``, of a conversation the reporter may read) or a user."""
        if reason not in REASONS:
            raise invalid(f"reason must be one of {', '.join(REASONS)}")
        if len(note) > MAX_NOTE:
            raise invalid(f"note must be at most {MAX_NOTE} characters")
        snapshot = ""
        if conv is not None or seq is not None:
            if conv is None or seq is None:
                raise invalid("a message is reported with both conv and seq")
            member = await self._conversations.member_for_read(reporter, conv)
            found = await self._log.get(conv, [seq]) if seq > max(member.join_seq, member.cleared_seq) else []
            if not found or not is_content(found[0].kind):
                raise not_found(f"no message {seq} to report in this conversation")
            message = found[0]
            if message.state in GONE_STATES:
                raise FlareError(ErrorCode.GONE, f"the message was {message.state}")
            if user is not None:
                raise invalid("report a message (conv and seq) or a user (user_id), not both")
            user = message.sender
            snapshot = json.dumps(
                {"msg_id": message.msg_id, "sender": message.sender, "kind": message.kind, "body": message.body,
                 "ts": message.ts, "version": message.version},
                ensure_ascii=False,
            )  # fmt: skip
        elif user is None:
            raise invalid("report a message (conv and seq) or a user (user_id)")
        else:
            user = check_id(user, "user id")
            if not await self._users.get_users([user]):
                raise not_found("no such user")
        if user == reporter:
            raise forbidden("a user cannot report itself or its own messages")
        report = Report(
            report_id=secrets.token_hex(8),
            reporter=reporter,
            target=user,
            conv=conv or "",
            seq=seq or 0,
            reason=reason,
            note=note,
            state=OPEN,
            created_at=self._clock(),
            snapshot=snapshot,
        )
        return await self._store.add_report(report)

    async def mine(self, reporter: str, *, limit: int = 100) -> list[Report]:
        return await self._store.reports(reporter=reporter, limit=limit)

    async def queue(self, *, state: str = OPEN, before: int = 0, limit: int = 100) -> list[Report]:
        if state and state not in REPORT_STATES:
            raise invalid(f"state must be one of {', '.join(REPORT_STATES)}")
        return await self._store.reports(state=state, before=before, limit=limit)

    async def get(self, report_id: str) -> Report:
        found = await self._store.get_report(report_id)
        if found is None:
            raise not_found("no such report")
        return found

    async def resolve(
        self, report_id: str, action: str, *, resolver: str, note: str = "", mute_until: int | None = None
    ) -> Report:
        """Act on an open report and close it (409 when it is closed already). The action's checks come first:
        when it is refused, the report stays open and nothing changed."""
        if action not in ACTIONS:
            raise invalid(f"action must be one of {', '.join(ACTIONS)}")
        if len(note) > MAX_NOTE:
            raise invalid(f"note must be at most {MAX_NOTE} characters")
        report = await self.get(report_id)
        if report.state != OPEN:
            raise FlareError(ErrorCode.CONFLICT, f"the report is {report.state} already")
        if action in (RECALL, MUTE) and not report.conv:
            # 409, not 422: the body is valid, the report is not one it applies to (a state of the server)
            raise FlareError(ErrorCode.CONFLICT, f"{action} needs a reported message; this report is of a user")
        if action == MUTE:
            if parse_conv(report.conv).kind != GROUP:
                raise FlareError(
                    ErrorCode.CONFLICT, "mute applies in groups; the reported message is in a direct conversation"
                )
            await self._mutes.mute_by_moderation(report.conv, report.target, mute_until)
        elif action == RECALL:
            await self._recall(report.conv, report.seq)
        state = DISMISSED if action == DISMISS else RESOLVED
        if not await self._store.resolve_report(report_id, state, action, resolver, note, self._clock()):
            raise FlareError(ErrorCode.CONFLICT, "the report was closed meanwhile")
        return await self.get(report_id)

    async def _recall(self, conv: str, seq: int) -> None:
        """Recall a message for everyone as the moderator (whatever its age); one already gone stays as it is."""
        for _ in range(3):  # a concurrent edit moved its version: read it again
            found = await self._log.get(conv, [seq])
            if not found or found[0].state in GONE_STATES:
                return
            message = found[0]
            change = Change(target=seq, version=message.version + 1, state="recalled")
            body = {"target": seq, "target_id": message.msg_id, "version": change.version, "by": "moderation"}
            recipients = list(parse_conv(conv).users) or [m.uid for m in await self._conversations.members(conv)]
            try:
                await self._router.append_op(
                    MODERATOR, conv, f"mod-{uuid.uuid4().hex}", "recall", body, change, recipients
                )
            except FlareError as exc:
                if exc.code == ErrorCode.CONFLICT:
                    continue
                raise
            return
        raise FlareError(ErrorCode.CONFLICT, "the message keeps changing; try again")
