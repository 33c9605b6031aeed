"""The content filter (F3, F5, F6): rules kept by the relational port, applied to message text on the send
and edit paths.

A rule matches a *word* (the text contains it, ignoring case; no word boundaries, so it works for languages
written without spaces) or a *regex*. Regex rules run on RE2, whose search time is linear in the text whatever
the pattern: an administrator's ``(a+)+$`` cannot stall the send path as it would with Python's backtracking
``re``. RE2 has no backreferences or lookaround; such a pattern is refused when the rule is written.

A rule's action *blocks* the message (error 451, nothing is stored) or *masks* each match with asterisks.
Block rules are checked first; then every mask rule is applied.

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

import re2

from flare_im.aio import Repeater
from flare_im.backends.relational.base import FilterRule, RuleStore
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, invalid, not_found

log = logging.getLogger(__name__)

MATCHES = ("word", "regex")
ACTIONS = ("block", "mask")
FILTERED_FIELDS = ("text", "name", "address")  # body fields people read as text (text, file, location)
MAX_PATTERN = 512
# RE2's program memory per pattern (its default is 8 MiB): a pattern with huge counted repetitions is refused.
REGEX_MAX_MEM = 2 << 20


def _regex_options() -> Any:
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False  # RE2 would print a bad pattern to stderr, outside our logs; we raise instead
    return options


_REGEX_OPTIONS = _regex_options()


def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time search), or ``re2.error``. The object has ``search`` and ``sub``
    as ``re.Pattern`` does."""
    return re2.compile(pattern, _REGEX_OPTIONS)


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
            compiled = compile_regex(rule.pattern)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise invalid(
                f"pattern is not a valid regular expression for RE2 (no backreferences or lookaround): {reason}"
            ) from None
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
        # A run of single characters is written in a loop, so a long word (a rule's pattern is up to 512
        # characters) recurses once per branching point, not once per character.
        chain = ""
        while len(node) == 1 and "" not in node:
            char, node = next(iter(node.items()))
            chain += re.escape(char)
        ends = "" in node
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return chain
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:  # a word ends here and longer ones go on: the longer match is taken first
            return f"{chain}(?:{body})?"
        return chain + body

    return build(trie)


def _stars(match: Any) -> str:
    return "*" * len(match.group())


@dataclass(frozen=True, slots=True)
class _Matcher:
    """The compiled enabled rules of one action.

    Word rules are one trie over lower-cased words, searched in the lower-cased text: several times faster
    than an IGNORECASE search. Where lower-casing changes a text's length (a few letters, such as "İ"), the
    positions no longer line up with the original, and the IGNORECASE twin is used instead."""

    words: re.Pattern[str] | None = None
    words_any_case: re.Pattern[str] | None = None
    regexes: tuple[Any, ...] = ()  # RE2 patterns (compile_regex)

    @classmethod
    def of(cls, rules: list[FilterRule]) -> _Matcher:
        words = sorted({r.pattern.lower() for r in rules if r.match == "word"})
        regexes = []
        for rule in rules:
            if rule.match == "regex":
                try:
                    regexes.append(compile_regex(rule.pattern))
                except re2.error:  # written by another version, or by hand: skipped, not fatal
                    log.warning("content filter: rule %s is not a valid RE2 regex, ignored", rule.rule_id)
        if not words:
            return cls(regexes=tuple(regexes))
        try:
            pattern = _word_pattern(words)
            return cls(re.compile(pattern), re.compile(pattern, re.IGNORECASE), tuple(regexes))
        except RecursionError:
            # Hundreds of words that are prefixes of one another nest the trie deeper than Python's parser
            # recurses. One flat alternation, longest word first, finds the same matches, more slowly.
            pattern = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
            return cls(re.compile(pattern), re.compile(pattern, re.IGNORECASE), tuple(regexes))

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
        # Decisions while any rule is enabled (read by /metrics): screened = passed + masked + blocked.
        self.screened = 0
        self.masked = 0
        self.blocked = 0
        # A failed reload keeps the rules we have.
        self._refresher = Repeater(self.reload, refresh_s, what="reloading the content-filter rules")

    def screen(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as it may be stored: the same object when no rule applies, a copy with masked text when
        a mask rule matched. Raises 451 when a block rule matched."""
        if not self._active:
            return body
        self.screened += 1
        masked: dict[str, Any] | None = None
        for field in FILTERED_FIELDS:
            text = body.get(field)
            if not isinstance(text, str) or not text:
                continue
            if self._block.search(text):
                self.blocked += 1
                raise FlareError(ErrorCode.BLOCKED, "the message was refused by the content filter")
            if not self._mask.empty:
                clean = self._mask.mask(text)
                if clean != text:
                    masked = masked if masked is not None else dict(body)
                    masked[field] = clean
        if masked is None:
            return body
        self.masked += 1
        return masked

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
