"""Snippets, highlights, query parsing and the merge of index tiers (services/search.py)."""

from __future__ import annotations

import pytest

from flare_im.backends.search.base import SearchHit, fold, searchable_text
from flare_im.protocol.errors import FlareError
from flare_im.protocol.frames import Message
from flare_im.services.search import ELLIPSIS, _cursor, _merge, _terms, snippet


def _marked(text: str, spans: list[tuple[int, int]]) -> str:
    out, at = [], 0
    for s, e in spans:
        out += [text[at:s], "[", text[s:e], "]"]
        at = e
    return "".join([*out, text[at:]])


def test_snippet_marks_every_match_case_folded() -> None:
    text, spans = snippet("Hello world, HELLO again", ["hello"])
    assert _marked(text, spans) == "[Hello] world, [HELLO] again"


def test_snippet_cuts_long_text_around_the_first_match() -> None:
    text = "x" * 200 + " 北京 " + "y" * 200
    excerpt, spans = snippet(text, ["北京"])
    assert excerpt.startswith(ELLIPSIS)
    assert excerpt.endswith(ELLIPSIS)
    assert len(excerpt) == 120 + 2
    [(s, e)] = spans
    assert excerpt[s:e] == "北京"


def test_snippet_merges_overlapping_terms_and_flattens_newlines() -> None:
    text, spans = snippet("abcdef\nxyz", ["bcd", "cde", "xy"])
    assert text == "abcdef xyz"
    assert _marked(text, spans) == "a[bcde]f [xy]z"


def test_fold_keeps_positions() -> None:
    assert len(fold("İstanbul")) == len("İstanbul")
    assert fold("ÄBC") == "äbc"


def test_searchable_text_is_the_top_level_string_fields() -> None:
    assert searchable_text("text", "", {"text": "a", "name": 3, "title": "t"}) == "a\nt"
    assert searchable_text("text", "recalled", {"text": "a"}) == ""
    assert searchable_text("edit", "", {"body": {"text": "a"}, "text": "x"}) == ""


@pytest.mark.parametrize("q", ["", "   ", "\u3000\t", "x" * 201])
def test_bad_queries_are_refused(q: str) -> None:
    with pytest.raises(FlareError):
        _terms(q)


def test_terms_split_on_whitespace_once_each() -> None:
    assert _terms(" 北京  hello\tHELLO hello\u3000x ") == ("北京", "hello", "HELLO", "x")
    assert _terms("a\x1cb\ufeff") == ("a\x1cb\ufeff",)  # not separators in every regex flavour: kept


@pytest.mark.parametrize("cursor", ["", "-1", "0", "01", "1.5", "١٢", str(2**63), str(9 * 10**18)])
def test_bad_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(FlareError):
        _cursor(cursor)


def _hit(conv: str, seq: int, msg_id: int) -> SearchHit:
    m = Message(conv=conv, seq=seq, msg_id=str(msg_id), sender="u", cmid="c", kind="text", body={}, ts=0)
    return SearchHit(message=m, text="")


def test_merge_of_tiers_is_newest_first_and_keeps_a_message_once() -> None:
    hot = [_hit("g:a", 9, 90), _hit("g:a", 5, 50)]
    archive = [_hit("g:a", 5, 50), _hit("g:b", 7, 70), _hit("g:a", 1, 10)]
    merged = _merge([hot, archive])
    assert [(h.message.conv, h.message.seq) for h in merged] == [("g:a", 9), ("g:b", 7), ("g:a", 5), ("g:a", 1)]
    assert merged[2] is hot[1]
