"""Anti-spam on the send path (F2): duplicate content, links, new accounts, mentions, and escalating automatic mutes.

Each rule is off until configured (``spam_*`` settings); with every rule off the router has no guard at all, so
the send path pays nothing. A refused send stores nothing and is recorded as a *decision* with its rule and its
reason in words (``GET /v1/admin/moderation/spam/decisions``). Rules, cheapest first:

- ``mentions``: more than ``spam_max_mentions`` mentions in one message (422).
- ``link``: a link to a denied domain, or (``spam_link_policy = allow``) to a domain not allowed (403). A rule for
  ``example.com`` covers its subdomains. Links are the domains in the text and in ``url`` fields, with or without
  a scheme.
- ``new_account``: an account younger than ``spam_new_account_s`` sends at most ``spam_new_account_per_min``
  messages a minute (429) and, unless ``spam_new_account_links``, no links (403).
- ``duplicate``: the same text (normalised: Unicode NFKC, case folded, only letters and digits kept, hashed) from
  one user more than ``spam_duplicate_max`` times within ``spam_duplicate_window_s``, in any conversations (429).

Escalation: when a user's refused sends within ``spam_strike_window_s`` reach ``spam_strikes``, the user is muted
everywhere for the next step of ``spam_mute_steps_s`` (by default 1 min, 10 min, 1 h, 1 day: the step is the number
of automatic mutes of the user in the last day). While muted every send is refused (403, ``reason: spam_muted``,
with ``until``); the mute is a decision too, and an administrator can lift it.

Counters (duplicates, new accounts' rate) live in the rate limiter: one node's memory, or Redis shared by all
nodes. Strikes and mutes are counted from the recorded decisions, so they hold across nodes and restarts.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flare_im.backends.ratelimit.base import RateLimiter
from flare_im.backends.relational.base import UserStore
from flare_im.backends.safety.base import ALLOW, DENY, SpamDecision, SpamStore
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.safety import SPAM, SafetyCache, SafetySync

OFF = "off"
LINK_POLICIES = (OFF, DENY, ALLOW)
REFUSED, MUTE, LIFT = "refused", "mute", "lift"
DAY_MS = 24 * 3600 * 1000
_MAX_ACCOUNT_AGES = 100_000  # users whose creation time is remembered (new-account rule)
_DOMAIN = re.compile(r"(?<![\w.@-])(?:[a-z][a-z0-9+.-]*://)?((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})\b")


@dataclass(frozen=True, slots=True)
class SpamPolicy:
    duplicate_max: int = 0  # 0: off
    duplicate_window_s: float = 60.0
    link_policy: str = OFF  # off | deny (denied domains refused) | allow (only allowed domains)
    max_mentions: int = 0  # 0: off
    new_account_s: float = 0.0  # 0: off
    new_account_per_min: int = 10
    new_account_links: bool = False  # may accounts younger than new_account_s send links
    strikes: int = 0  # 0: no automatic mutes
    strike_window_s: float = 600.0
    mute_steps_s: tuple[float, ...] = (60.0, 600.0, 3600.0, 86400.0)

    @property
    def enabled(self) -> bool:
        return bool(self.duplicate_max or self.link_policy != OFF or self.max_mentions or self.new_account_s)


class _Violation(Exception):
    def __init__(self, rule: str, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.rule, self.code, self.reason = rule, code, reason


def normalised_hash(text: str) -> str:
    """The text's fingerprint for duplicate detection: NFKC, case folded, letters and digits only ("Buy NOW!!!" and
    "buy now" are one text). A text with neither is taken as it is, without spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(c for c in folded if unicodedata.category(c)[0] in "LN") or "".join(folded.split())
    return hashlib.blake2b(kept.encode(), digest_size=8).hexdigest()


def domains_in(texts: Iterable[str]) -> set[str]:
    """The domains linked in ``texts`` (lower case), with or without a scheme."""
    found: set[str] = set()
    for text in texts:
        if "." in text:
            found.update(m.group(1) for m in _DOMAIN.finditer(text.lower()))
    return found


def rule_for(domain: str, rules: dict[str, str]) -> str | None:
    """The policy of ``domain`` or of the nearest parent domain that has one."""
    parts = domain.split(".")
    for i in range(len(parts) - 1):
        policy = rules.get(".".join(parts[i:]))
        if policy is not None:
            return policy
    return None


def _texts(body: dict[str, Any]) -> list[str]:
    return [v for k in ("text", "url", "name") if isinstance(v := body.get(k), str)]


class SpamGuard:
    def __init__(
        self,
        policy: SpamPolicy,
        store: SpamStore,
        cache: SafetyCache,
        sync: SafetySync,
        limiter: RateLimiter,
        users: UserStore,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.policy = policy
        self._store = store
        self._cache = cache
        self._sync = sync
        self._limiter = limiter
        self._users = users
        self._clock = clock
        self._created: OrderedDict[str, int] = OrderedDict()  # uid -> created_at, most recently used last

    async def check(self, sender: str, conv: str, body: dict[str, Any]) -> None:
        """Raise FlareError when ``sender`` may not send ``body`` now (the refusal is recorded first)."""
        until = self._cache.spam_muted(sender)
        if until:
            raise FlareError(
                ErrorCode.FORBIDDEN,
                "sending is paused for this account after repeated spam",
                detail={"reason": "spam_muted", "until": until},
            )
        p = self.policy
        try:
            if p.max_mentions:
                mentions = body.get("mentions")
                if isinstance(mentions, list) and len(mentions) > p.max_mentions:
                    raise _Violation(
                        "mentions", ErrorCode.INVALID, f"{len(mentions)} mentions; at most {p.max_mentions} a message"
                    )
            texts = _texts(body)
            new = bool(p.new_account_s) and await self._is_new(sender)
            if (p.link_policy != OFF or new) and texts:
                self._check_links(domains_in(texts), new)
            if new and not await self._limiter.hit(f"spam:new:{sender}", p.new_account_per_min, 60.0):
                raise _Violation(
                    "new_account",
                    ErrorCode.RATE_LIMITED,
                    f"a new account sends at most {p.new_account_per_min} messages a minute",
                )
            if p.duplicate_max and texts:
                key = f"spam:dup:{sender}:{normalised_hash(' '.join(texts))}"
                if not await self._limiter.hit(key, p.duplicate_max, p.duplicate_window_s):
                    raise _Violation(
                        "duplicate",
                        ErrorCode.RATE_LIMITED,
                        f"the same text more than {p.duplicate_max} times in {p.duplicate_window_s:g} s",
                    )
        except _Violation as v:
            await self._refused(sender, conv, v)
            raise FlareError(v.code, v.reason, retryable=False, detail={"reason": "spam", "rule": v.rule}) from None

    def _check_links(self, domains: set[str], new: bool) -> None:
        if not domains:
            return
        if new and not self.policy.new_account_links:
            raise _Violation("new_account", ErrorCode.FORBIDDEN, "a new account may not send links yet")
        rules = self._cache.domain_rules
        for domain in sorted(domains):
            policy = rule_for(domain, rules)
            if policy == DENY or (self.policy.link_policy == ALLOW and policy != ALLOW):
                raise _Violation("link", ErrorCode.FORBIDDEN, f"links to {domain} are not allowed")

    async def _is_new(self, uid: str) -> bool:
        created = self._created.get(uid)
        if created is None:
            user = await self._users.get_user(uid)
            created = user.created_at if user is not None else 0
            self._created[uid] = created
            if len(self._created) > _MAX_ACCOUNT_AGES:
                self._created.popitem(last=False)
        else:
            self._created.move_to_end(uid)
        return self._clock() - created < self.policy.new_account_s * 1000

    async def _refused(self, uid: str, conv: str, v: _Violation) -> None:
        now = self._clock()
        await self._store.record_decision(SpamDecision(uid, v.rule, REFUSED, v.reason, conv, now))
        p = self.policy
        if not p.strikes:
            return
        window_ms = int(p.strike_window_s * 1000)
        strikes = await self._store.count_decisions(uid, now - window_ms, REFUSED)
        if strikes < p.strikes:
            return
        level = await self._store.count_decisions(uid, now - DAY_MS, MUTE)
        duration_s = p.mute_steps_s[min(level, len(p.mute_steps_s) - 1)]
        until = now + int(duration_s * 1000)
        await self._store.set_user_mute(uid, until)
        self._cache.set_spam_mute(uid, until)
        self._sync.changed(SPAM, uid)
        reason = (
            f"{strikes} refused sends within {p.strike_window_s:g} s: muted for {duration_s:g} s"
            f" (automatic mute {level + 1} in a day)"
        )
        await self._store.record_decision(SpamDecision(uid, MUTE, MUTE, reason, conv, now))

    # ------------------------------------------------------------------ administration

    def domain_rules(self) -> dict[str, str]:
        return dict(self._cache.domain_rules)

    async def decisions(self, *, uid: str = "", before: int = 0, limit: int = 100) -> list[SpamDecision]:
        return await self._store.decisions(uid=uid, before=before, limit=limit)

    async def mutes(self) -> dict[str, int]:
        return await self._store.user_mutes(self._clock())

    async def set_domain(self, domain: str, policy: str | None) -> bool:
        changed = await self._store.set_domain_rule(domain, policy)
        await self._cache.reload(SPAM, "")
        self._sync.changed(SPAM, "")
        return changed

    async def lift(self, uid: str, by: str) -> bool:
        if not self._cache.spam_muted(uid):
            return False
        await self._store.set_user_mute(uid, 0)
        self._cache.set_spam_mute(uid, 0)
        self._sync.changed(SPAM, uid)
        await self._store.record_decision(SpamDecision(uid, MUTE, LIFT, f"lifted by {by}", "", self._clock()))
        return True
