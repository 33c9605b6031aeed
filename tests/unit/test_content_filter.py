"""The content filter (services/content_filter.py) over the embedded relational store: rule checks, the
word trie against a plain substring search, block before mask, and reloading when the revision moves."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flare_im.backends.relational.base import FilterRule
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.content_filter import ContentFilter, _word_pattern, check_rule, stored_if_filtered


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRelational]:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    relational = SqliteRelational(db)
    db.start()
    yield relational
    await db.close()


def test_word_trie_finds_exactly_what_a_substring_search_finds() -> None:
    rng = random.Random(7)
    alphabet = "abc文字"
    for _ in range(300):
        words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 6))}
        text = "".join(rng.choice(alphabet + " ") for _ in range(rng.randint(0, 12)))
        trie = re.compile(_word_pattern(words), re.IGNORECASE)
        assert bool(trie.search(text)) == any(w in text for w in words), (words, text)
        # Masking through the trie hides every occurrence of every word.
        masked = trie.sub(lambda m: "*" * len(m.group()), text)
        assert len(masked) == len(text)
        assert not any(w in masked for w in words), (words, text, masked)


def test_longest_word_is_masked_first() -> None:
    trie = re.compile(_word_pattern(["bad", "badword"]), re.IGNORECASE)
    assert trie.sub(lambda m: "*" * len(m.group()), "a BadWord here") == "a ******* here"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (FilterRule("r", "x", "glob", "block"), "match must be one of"),
        (FilterRule("r", "x", "word", "delete"), "action must be one of"),
        (FilterRule("r", "   ", "word", "block"), "pattern must be"),
        (FilterRule("r", "x" * 513, "word", "block"), "pattern must be"),
        (FilterRule("r", "(unclosed", "regex", "block"), "not a valid regular expression"),
        (FilterRule("r", "a*", "regex", "mask"), "must not match the empty text"),
        # RE2 has no backtracking features: refused when written, never a surprise on the send path.
        (FilterRule("r", r"(a)\1", "regex", "block"), "no backreferences or lookaround"),
        (FilterRule("r", r"foo(?=bar)", "regex", "block"), "no backreferences or lookaround"),
        (FilterRule("r", r"(?<!x)y", "regex", "block"), "no backreferences or lookaround"),
        (FilterRule("r", "a{1000}{1000}", "regex", "block"), "not a valid regular expression"),
    ],
)
def test_bad_rules_are_refused(rule: FilterRule, message: str) -> None:
    with pytest.raises(FlareError, match=message) as err:
        check_rule(rule)
    assert err.value.code == ErrorCode.INVALID


async def test_block_mask_and_untouched(store: SqliteRelational) -> None:
    f = ContentFilter(store)
    await f.reload()
    body = {"text": "nothing to see"}
    assert f.screen(body) is body  # no rules: the same object, no work

    await f.put_rule(None, pattern="Scam", match="word", action="block")
    await f.put_rule(None, pattern="darn", match="word", action="mask")
    await f.put_rule(None, pattern=r"\b\d{3}-\d{4}\b", match="regex", action="mask")

    with pytest.raises(FlareError) as err:
        f.screen({"text": "a SCAMMER wrote"})
    assert err.value.code == ErrorCode.BLOCKED
    with pytest.raises(FlareError):  # file names and locations are text people read, too
        f.screen({"url": "https://f/x", "name": "scam.pdf", "size": 1})
    # block wins over mask in the same text
    with pytest.raises(FlareError):
        f.screen({"text": "darn scam"})

    sent = {"text": "Darn, call 555-1234", "mentions": ["bob"]}
    stored = f.screen(sent)
    assert stored == {"text": "****, call ********", "mentions": ["bob"]}
    assert sent["text"] == "Darn, call 555-1234"  # the caller's body is not changed in place
    assert stored_if_filtered(sent, stored) == stored
    clean = {"text": "hello"}
    assert f.screen(clean) is clean
    assert stored_if_filtered(clean, f.screen(clean)) is None
    assert f.screen({"data": {"text": "scam"}}) == {"data": {"text": "scam"}}  # custom data is the app's


async def test_letters_whose_lower_case_is_longer_keep_positions(store: SqliteRelational) -> None:
    f = ContentFilter(store)
    await f.put_rule(None, pattern="DARN", match="word", action="mask")
    await f.put_rule(None, pattern="heck", match="word", action="block")
    assert len("İ".lower()) == 2  # the case the lower-cased search cannot line up
    assert f.screen({"text": "İstanbul, Darn it"}) == {"text": "İstanbul, **** it"}
    assert f.screen({"text": "Darn it, darn"}) == {"text": "**** it, ****"}
    with pytest.raises(FlareError):
        f.screen({"text": "İ HECK"})


async def test_disable_replace_and_delete_apply_at_once(store: SqliteRelational) -> None:
    f = ContentFilter(store)
    await f.reload()
    rule = await f.put_rule("spam", pattern="spam", match="word", action="block")
    with pytest.raises(FlareError):
        f.screen({"text": "spam"})
    replaced = await f.put_rule("spam", pattern="spam", match="word", action="block", enabled=False)
    assert replaced.created_at == rule.created_at
    assert f.screen({"text": "spam"}) == {"text": "spam"}
    await f.put_rule("spam", pattern="spam", match="word", action="mask")
    assert f.screen({"text": "spam"}) == {"text": "****"}
    await f.delete_rule("spam")
    assert f.screen({"text": "spam"}) == {"text": "spam"}
    with pytest.raises(FlareError) as err:
        await f.delete_rule("spam")
    assert err.value.code == ErrorCode.NOT_FOUND


async def test_another_node_sees_changes_after_its_refresh(store: SqliteRelational) -> None:
    here, there = ContentFilter(store, refresh_s=0.05), ContentFilter(store, refresh_s=0.05)
    await there.reload()
    there.start()
    try:
        await here.put_rule(None, pattern="blocked", match="word", action="block")
        async with asyncio.timeout(10):  # refreshes every 50 ms; a busy machine may take longer
            while True:
                try:
                    there.screen({"text": "blocked"})
                except FlareError:
                    break
                await asyncio.sleep(0.02)
    finally:
        await there.close()


async def test_a_refused_regex_changes_no_rule(store: SqliteRelational) -> None:
    f = ContentFilter(store)
    await f.put_rule("keep", pattern="spam", match="word", action="block")
    before = (await f.rules(), await store.filter_rules_revision())
    with pytest.raises(FlareError) as err:
        await f.put_rule("keep", pattern=r"(sp)am\1", match="regex", action="block")
    assert err.value.code == ErrorCode.INVALID
    assert (await f.rules(), await store.filter_rules_revision()) == before


# Screens with two catastrophic patterns in a process of its own: a backtracking engine holds the GIL for the
# whole match, so no deadline in this process could interrupt it (the test would hang instead of failing).
_CATASTROPHIC = """
import asyncio, json, sys
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.services.content_filter import ContentFilter

async def main() -> None:
    db = SqliteDatabase(SqliteConfig(path=sys.argv[1]))
    f = ContentFilter(SqliteRelational(db))
    db.start()
    await f.put_rule(None, pattern=r"(x+x+)+y", match="regex", action="mask")
    await f.put_rule(None, pattern=r"^(a|aa)+$", match="regex", action="block")
    text = "x" * 40 + " " + "a" * 40 + "!"
    print(json.dumps([f.screen({"text": text}), f.screen({"text": "xxxy and more"})]))
    await db.close()

asyncio.run(main())
"""


def test_a_catastrophic_pattern_runs_in_linear_time(tmp_path: Path) -> None:
    """``(x+x+)+y`` on 40 x's takes Python's backtracking engine about 2^40 steps; RE2 answers at once."""
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CATASTROPHIC, str(tmp_path / "flare.db")],
            capture_output=True,
            text=True,
            timeout=20,  # killed past it: a backtracking engine
        )
    except subprocess.TimeoutExpired:
        pytest.fail("screening two catastrophic patterns took over 20 s: not a linear-time engine")
    assert child.returncode == 0, child.stderr
    text = "x" * 40 + " " + "a" * 40 + "!"
    assert json.loads(child.stdout) == [{"text": text}, {"text": "**** and more"}]  # no match; then masked


async def test_words_nested_past_the_recursion_limit_still_match(store: SqliteRelational) -> None:
    """512 words that are prefixes of one another nest the trie 512 deep, past what Python's regex parser
    recurses: the filter falls back to a flat alternation and masks the same way (was a failed reload)."""
    f = ContentFilter(store)
    for i in range(1, 513):  # straight into the store, then one reload (put_rule reloads after each)
        await store.put_filter_rule(FilterRule(f"w{i}", "z" * i, "word", "mask", True, "", 1, 1))
    await f.reload()
    assert len(await f.rules()) == 512
    assert f.screen({"text": "a zzz b " + "z" * 600}) == {"text": "a *** b " + "*" * 600}
    assert f.screen({"text": "Zz!"}) == {"text": "**!"}
