"""The content filter (F3, F5, F6): rules kept by the relational port, applied to message text on the send
and edit paths.

A rule matches a *word* (the text contains it, ignoring case; no word boundaries, so it works for languages
written without spaces) or a *regex*. Its action *blocks* the message (error 451, nothing is stored) or
*masks* each match with asterisks. Block rules are checked first; then every mask rule is applied.

Each node keeps the rules compiled in memory and reloads them when the rules' revision moves: at once on the
node that changed them, and within ``refresh_s`` on every other node (one primary-key read per interval).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flare_im.aio import Repeater
from flare_im.backends.relational.base import FilterRule, RuleStore
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, invalid, not_found

log = logging.getLogger(__name__)

MATCHES = ("word", "regex")
ACTIONS = ("block", "mask")
FILTERED_FIELDS = ("text", "name", "address")  # body fields people read as text (text, file, location)
MAX_PATTERN = 512


def check_rule(rule: FilterRule) -> None:
    """Raise 422 unless ``rule`` can be compiled and applied."""
    if rule.match not in MATCHES:
        raise invalid(f"match must be one of {', '.join(MATCHES)}")
    if rule.action not in ACTIONS:
        raise invalid(f"action must be one of {', '.join(ACTIONS)}")
    if not rule.pattern.strip() or len(rule.pattern) > MAX_PATTERN:
        raise invalid(f"pattern must be 1-{MAX_PATTERN} characters, not only spaces")
    if rule.match == "regex":
        try:
            compiled = re.compile(rule.pattern)
        except re.error as exc:
            raise invalid(f"pattern is not a valid regular expression: {exc}") from None
        if compiled.search(""):
            raise invalid("a regex pattern must not match the empty text")


def stored_if_filtered(sent: dict[str, Any], stored: Any) -> dict[str, Any] | None:
    """The stored body when the filter masked a field of the ``sent`` one (an ack then carries it, so the
    sending device shows what everybody else sees), else None."""
    if stored is sent or not isinstance(stored, dict):  # the common case first: stored as sent
        return None
    changed = any(stored.get(field) != sent.get(field) for field in FILTERED_FIELDS if field in sent)
    return stored if changed else None


def _word_pattern(words: Iterable[str]) -> str:
    """One regex for many words, as a trie (``ab|ac`` becomes ``a(?:b|c)``): the engine then tests each
    position of the text against the trie rather than against every word in turn."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # end of a word

    def build(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:  # a word ends here and longer ones go on: the longer match is taken first
            return f"(?:{body})?"
        return body

    return build(trie)


def _stars(match: re.Match[str]) -> str:
    return "*" * len(match.group())


@dataclass(frozen=True, slots=True)
class _Matcher:
    """The compiled enabled rules of one action.

    Word rules are one trie over lower-cased words, searched in the lower-cased text: several times faster
    than an IGNORECASE search. Where lower-casing changes a text's length (a few letters, such as "İ"), the
    positions no longer line up with the original, and the IGNORECASE twin is used instead."""

    words: re.Pattern[str] | None = None
    words_any_case: re.Pattern[str] | None = None
    regexes: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, rules: list[FilterRule]) -> _Matcher:
        words = sorted({r.pattern.lower() for r in rules if r.match == "word"})
        regexes = []
        for rule in rules:
            if rule.match == "regex":
                try:
                    regexes.append(re.compile(rule.pattern))
                except re.error:  # written by another version, or by hand: skipped, not fatal
                    log.warning("content filter: rule %s has an invalid regex, ignored", rule.rule_id)
        if not words:
            return cls(regexes=tuple(regexes))
        trie = _word_pattern(words)
        return cls(re.compile(trie), re.compile(trie, re.IGNORECASE), tuple(regexes))

    @property
    def empty(self) -> bool:
        return self.words is None and not self.regexes

    def search(self, text: str) -> bool:
        if self.words is not None and self.words_any_case is not None:
            lower = text.lower()
            if self.words.search(lower) if len(lower) == len(text) else self.words_any_case.search(text):
                return True
        return any(p.search(text) for p in self.regexes)

    def mask(self, text: str) -> str:
        if self.words is not None and self.words_any_case is not None:
            lower = text.lower()
            if len(lower) != len(text):
                text = self.words_any_case.sub(_stars, text)
            elif self.words.search(lower):  # most texts match nothing: searching is cheaper than substituting
                spans = [m.span() for m in self.words.finditer(lower)]
                chars = list(text)
                for start, end in spans:
                    chars[start:end] = "*" * (end - start)
                text = "".join(chars)
        for pattern in self.regexes:
            if pattern.search(text):
                text = pattern.sub(_stars, text)
        return text


class ContentFilter:
    def __init__(self, rules: RuleStore, *, refresh_s: float = 2.0) -> None:
        self._rules = rules
        self._revision = -1
        self._block = _Matcher()
        self._mask = _Matcher()
        self._active = False  # any enabled rule
        # A failed reload keeps the rules we have.
        self._refresher = Repeater(self.reload, refresh_s, what="reloading the content-filter rules")

    def screen(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as it may be stored: the same object when no rule applies, a copy with masked text when
        a mask rule matched. Raises 451 when a block rule matched."""
        if not self._active:
            return body
        masked: dict[str, Any] | None = None
        for field in FILTERED_FIELDS:
            text = body.get(field)
            if not isinstance(text, str) or not text:
                continue
            if self._block.search(text):
                raise FlareError(ErrorCode.BLOCKED, "the message was refused by the content filter")
            if not self._mask.empty:
                clean = self._mask.mask(text)
                if clean != text:
                    masked = masked if masked is not None else dict(body)
                    masked[field] = clean
        return body if masked is None else masked

    # ---------------------------------------------------------------- rule management (admin)

    async def rules(self) -> list[FilterRule]:
        return await self._rules.filter_rules()

    async def put_rule(
        self, rule_id: str | None, *, pattern: str, match: str, action: str, enabled: bool = True, note: str = ""
    ) -> FilterRule:
        """Create a rule (``rule_id`` None: a new id) or replace one; applied on this node at once."""
        now = now_ms()
        created = now
        if rule_id is None:
            rule_id = uuid.uuid4().hex[:12]
        else:
            if not 1 <= len(rule_id) <= 64:
                raise invalid("rule_id must be 1-64 characters")
            known = {r.rule_id: r for r in await self._rules.filter_rules()}.get(rule_id)
            created = known.created_at if known is not None else now
        rule = FilterRule(rule_id, pattern, match, action, enabled, note[:512], created, now)
        check_rule(rule)
        await self._rules.put_filter_rule(rule)
        await self.reload()
        return rule

    async def delete_rule(self, rule_id: str) -> None:
        if not await self._rules.delete_filter_rule(rule_id):
            raise not_found(f"no content-filter rule {rule_id!r}")
        await self.reload()

    # ---------------------------------------------------------------- reloading

    async def reload(self) -> None:
        """Compile the rules again if their revision moved."""
        revision = await self._rules.filter_rules_revision()
        if revision == self._revision:
            return
        rules = [r for r in await self._rules.filter_rules() if r.enabled]
        self._block = _Matcher.of([r for r in rules if r.action == "block"])
        self._mask = _Matcher.of([r for r in rules if r.action == "mask"])
        self._active = not (self._block.empty and self._mask.empty)
        self._revision = revision
        log.info("content filter: %d rules (revision %d)", len(rules), revision)

    def start(self) -> None:
        self._refresher.start()

    async def close(self) -> None:
        await self._refresher.close()
