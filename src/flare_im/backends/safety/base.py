"""The safety port (U2, U3, F1, F2): blocks between users, mutes in groups, reports, invite links and join
requests, and the anti-spam decisions. Its tables are their own migration component (``safety``).

Every change moves one revision counter (``revision``) in the same transaction: a node that may have missed a
change notice on the node bus re-reads what it caches once it sees the revision move (services/safety.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

EVERYONE = "*"  # a group mute of every member except owner and admins ("mute all")
FOREVER = 2**62  # a mute's ``until`` when it has no end (epoch ms)


@dataclass(frozen=True, slots=True)
class Block:
    uid: str  # who blocks
    target: str  # who is blocked
    created_at: int  # epoch ms


@dataclass(frozen=True, slots=True)
class GroupMute:
    conv: str  # g:<gid>
    uid: str  # the muted member, or EVERYONE
    until: int  # epoch ms; FOREVER when it has no end
    actor: str  # who muted
    created_at: int = 0


class BlockStore(Protocol):
    async def all_blocks(self) -> list[Block]:
        """Every block (each node keeps them all in memory: blocks are few beside messages)."""
        ...

    async def blocks_of(self, uid: str) -> tuple[list[Block], int]:
        """The users ``uid`` blocks, oldest first, and the version of that list (0: never changed)."""
        ...

    async def set_block(self, uid: str, target: str, blocked: bool, at: int) -> int:
        """Block (``blocked``) or unblock ``target`` for ``uid`` at epoch ms ``at``, atomically with the list's
        version; returns the new version (greater than every earlier one of the list), or 0 when nothing changed
        (already blocked / not blocked)."""
        ...

    async def revision(self) -> int:
        """A counter every change of this port moves (in the change's transaction)."""
        ...


class MuteStore(Protocol):
    async def all_mutes(self, now: int) -> list[GroupMute]:
        """Every mute that has not ended at ``now``."""
        ...

    async def mutes_of(self, conv: str, now: int) -> list[GroupMute]:
        """The mutes of one group that have not ended at ``now``."""
        ...

    async def set_mute(self, mute: GroupMute) -> None:
        """Create or replace the mute of ``(mute.conv, mute.uid)``."""
        ...

    async def remove_mute(self, conv: str, uid: str) -> bool:
        """Lift a mute; False when there was none."""
        ...


OPEN, RESOLVED, DISMISSED = "open", "resolved", "dismissed"
REPORT_STATES = (OPEN, RESOLVED, DISMISSED)


@dataclass(frozen=True, slots=True)
class Report:
    report_id: str
    reporter: str
    target: str  # the reported user (a message's sender)
    conv: str = ""  # a reported message's conversation ("" when a user is reported)
    seq: int = 0  # and its seq
    reason: str = "other"
    note: str = ""  # the reporter's words
    state: str = OPEN
    created_at: int = 0
    resolved_at: int = 0
    resolver: str = ""  # the admin key id that acted
    action: str = ""  # what it did: none | recall | mute | ...
    resolution: str = ""  # the admin's note
    snapshot: str = ""  # a reported message as JSON when it was reported (it may be recalled since)


class ReportStore(Protocol):
    async def add_report(self, report: Report) -> Report:
        """Store ``report``; if the reporter has an open report of the same user and message, nothing is added
        and that one is returned (a report sent twice is one report)."""
        ...

    async def get_report(self, report_id: str) -> Report | None: ...

    async def reports(self, *, state: str = "", reporter: str = "", before: int = 0, limit: int = 100) -> list[Report]:
        """Reports in one ``state`` ("" all) and of one ``reporter`` ("" all), newest first, created before
        ``before`` (0: no bound)."""
        ...

    async def resolve_report(self, report_id: str, state: str, action: str, resolver: str, note: str, at: int) -> bool:
        """Close an open report; False when it is not open (closed already, or no such report): a report is
        closed once."""
        ...


PENDING, APPROVED, DENIED = "pending", "approved", "denied"


@dataclass(frozen=True, slots=True)
class Invite:
    code: str  # the link's secret part
    conv: str
    creator: str
    created_at: int
    expires_at: int = 0  # epoch ms; 0: never
    max_uses: int = 0  # 0: unlimited
    uses: int = 0
    approval: bool = False  # a join by this link waits for an owner's or admin's approval
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class JoinRequest:
    conv: str
    uid: str
    code: str  # the invite it came by
    note: str = ""
    state: str = PENDING
    created_at: int = 0
    decided_at: int = 0
    decider: str = ""


class JoinStore(Protocol):
    async def put_invite(self, invite: Invite) -> None: ...

    async def get_invite(self, code: str) -> Invite | None: ...

    async def invites_of(self, conv: str) -> list[Invite]:
        """The group's links that are not revoked, newest first."""
        ...

    async def revoke_invite(self, conv: str, code: str) -> bool:
        """False when the group has no such link (or it was revoked already)."""
        ...

    async def use_invite(self, code: str, now: int) -> Invite | None:
        """Count one use of the link, atomically, if it is usable at ``now`` (not revoked, not expired, uses left);
        returns it as counted, or None (nothing changed). Two callers never both take the last use."""
        ...

    async def unuse_invite(self, code: str) -> None:
        """Give back one use (the join it was counted for was refused after all)."""
        ...

    async def add_join_request(self, request: JoinRequest) -> JoinRequest:
        """Store a pending request; when the user already has a pending one for the group, that one is returned
        unchanged (a decided one is replaced)."""
        ...

    async def join_requests(self, conv: str, state: str = PENDING) -> list[JoinRequest]:
        """The group's requests in ``state``, oldest first."""
        ...

    async def decide_join_request(self, conv: str, uid: str, state: str, decider: str, at: int) -> JoinRequest | None:
        """Approve or deny a pending request, once; None when there is no pending request."""
        ...

    async def group_limit(self, conv: str) -> int:
        """The group's own member limit, 0 when it has none (the server's applies)."""
        ...

    async def set_group_limit(self, conv: str, max_members: int) -> None:
        """Set the group's member limit (0: back to the server's)."""
        ...


ALLOW, DENY = "allow", "deny"


@dataclass(frozen=True, slots=True)
class SpamDecision:
    uid: str
    rule: str  # duplicate | link | mentions | new_account | muted (a send refused), or mute (an automatic mute)
    action: str  # refused | mute
    reason: str  # in words, with the numbers that decided it
    conv: str = ""
    created_at: int = 0
    decision_id: int = 0  # given by the store


class SpamStore(Protocol):
    async def domain_rules(self) -> dict[str, str]:
        """Every link rule: domain -> ALLOW | DENY."""
        ...

    async def set_domain_rule(self, domain: str, policy: str | None) -> bool:
        """Create, replace (``policy``) or delete (None) a domain's rule; False when deleting one that is not
        there."""
        ...

    async def record_decision(self, decision: SpamDecision) -> None: ...

    async def decisions(self, *, uid: str = "", before: int = 0, limit: int = 100) -> list[SpamDecision]:
        """Decisions, of one user or all, newest first, with an id below ``before`` (0: no bound)."""
        ...

    async def count_decisions(self, uid: str, since: int, action: str) -> int:
        """How many decisions with ``action`` were recorded for ``uid`` at or after ``since``."""
        ...

    async def user_mutes(self, now: int) -> dict[str, int]:
        """Users muted everywhere by the anti-spam (uid -> until, epoch ms) whose mute has not ended at ``now``."""
        ...

    async def set_user_mute(self, uid: str, until: int) -> None:
        """Mute ``uid`` everywhere until ``until`` (0: lift it)."""
        ...
