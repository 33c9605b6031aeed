"""Notification rules and templates (services/notify_rules.py, notify_templates.py): categories, settings, mute,
mentions, quiet hours across midnight and time zones, languages, snippets and placeholders."""

from __future__ import annotations

import pytest

from flare_im.backends.relational.notifications import NotifySettings
from flare_im.services import notify_templates as tpl
from flare_im.services.notify_rules import category, drop_reason, format_hhmm, in_quiet_hours, parse_hhmm

T0 = 1_700_000_000.0  # 22:13 UTC


def test_categories() -> None:
    assert category("text", {"text": "hi"}, "bob", "ada") == "message"
    assert category("text", {"text": "hi"}, "ada", "ada") == ""  # the sender
    assert category("text", {"text": "hi", "mentions": ["bob"]}, "bob", "ada") == "mention"
    assert category("text", {"text": "hi", "mentions": ["all"]}, "bob", "ada") == "mention"
    assert category("custom", {"data": {"type": "call"}}, "bob", "ada") == "call"
    assert category("custom", {"data": {"type": "card"}}, "bob", "ada") == "message"
    assert category("edit", {"target": 1}, "bob", "ada") == ""
    assert category("system", {"event": "members_added", "users": ["bob"]}, "bob", "ada") == "system"
    assert category("system", {"event": "members_added", "users": ["cy"]}, "bob", "ada") == ""
    assert category("system", {"event": "group_updated", "users": ["bob"]}, "bob", "ada") == ""


def test_drop_reasons() -> None:
    default = NotifySettings("bob")
    assert drop_reason(default, "message", muted=False, mentioned=False, now_s=T0) == ""
    assert drop_reason(default, "message", muted=True, mentioned=False, now_s=T0) == "muted"
    assert drop_reason(default, "mention", muted=True, mentioned=False, now_s=T0) == "muted"  # @all
    assert drop_reason(default, "mention", muted=True, mentioned=True, now_s=T0) == ""
    assert drop_reason(default, "call", muted=True, mentioned=False, now_s=T0) == ""
    strict = NotifySettings("bob", mentions_break_mute=False)
    assert drop_reason(strict, "mention", muted=True, mentioned=True, now_s=T0) == "muted"
    mentions = NotifySettings("bob", mode="mentions")
    assert drop_reason(mentions, "message", muted=False, mentioned=False, now_s=T0) == "mentions_only"
    assert drop_reason(mentions, "mention", muted=False, mentioned=True, now_s=T0) == ""
    off = NotifySettings("bob", mode="none")
    assert drop_reason(off, "call", muted=False, mentioned=False, now_s=T0) == "notifications_off"


@pytest.mark.parametrize(
    ("start", "end", "zone", "quiet"),
    [
        ("22:00", "07:00", "UTC", True),  # 22:13, across midnight
        ("23:00", "07:00", "UTC", False),
        ("06:00", "07:00", "Asia/Shanghai", True),  # 06:13 there
        ("22:13", "22:14", "UTC", True),  # start inclusive
        ("22:00", "22:13", "UTC", False),  # end exclusive
        ("", "", "UTC", False),
        ("08:00", "08:00", "UTC", False),  # empty range
        ("22:00", "07:00", "No/Such_Zone", True),  # an unknown zone reads as UTC
    ],
)
def test_quiet_hours(start: str, end: str, zone: str, quiet: bool) -> None:
    settings = NotifySettings("bob", quiet_start=parse_hhmm(start), quiet_end=parse_hhmm(end), timezone=zone)
    assert in_quiet_hours(settings, T0) is quiet


def test_times_parse_and_format() -> None:
    assert parse_hhmm("07:05") == 425
    assert format_hhmm(425) == "07:05"
    assert parse_hhmm("") == -1
    assert format_hhmm(-1) == ""
    for bad in ("7:05", "24:00", "12:60", "noon"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_hhmm(bad)


def test_languages_snippets_and_placeholders() -> None:
    assert [tpl.language(x) for x in ("zh", "zh-CN", "zh_Hant_TW", "en-GB", "", "fr")] == [
        "zh",
        "zh",
        "zh",
        "en",
        "en",
        "en",
    ]
    assert tpl.snippet("en", "text", {"text": "a\n  b"}) == "a b"
    assert tpl.snippet("en", "text", {"text": "x" * 200}) == "x" * 119 + "…"
    assert tpl.snippet("en", "image", {"url": "u"}) == "[Image]"
    assert tpl.snippet("zh", "voice", {}) == "[语音]"
    assert tpl.snippet("en", "file", {"name": "a.pdf"}) == "[File] a.pdf"
    assert tpl.snippet("en", "location", {}) == "[Location]"
    assert tpl.snippet("en", "merged", {}) == "[Chat history]"
    assert tpl.snippet("en", "unknown_kind", {}) == "[Message]"


def test_renderings() -> None:
    direct = tpl.Context("en", "Ada")
    group = tpl.Context("zh", "Ada", "Team")
    assert tpl.render_message(direct, "text", {"text": "hi"}) == tpl.Rendered("Ada", "hi")
    assert tpl.render_message(group, "text", {"text": "hi"}) == tpl.Rendered("Team", "Ada\uff1ahi")
    assert tpl.render_burst(direct, 5) == tpl.Rendered("Ada", "5 new messages from Ada")
    assert tpl.render_burst(group, 3) == tpl.Rendered("Team", "3 条新消息")
    assert tpl.render_recall(direct, "recall") == tpl.Rendered("Ada", "Ada recalled a message")
    hidden = tpl.Context("en", "Ada", "Team", preview=False)
    assert tpl.render_message(hidden, "text", {"text": "secret"}) == tpl.Rendered("", "New message")
    assert tpl.render_burst(hidden, 2) == tpl.Rendered("", "2 new messages")
    assert tpl.render_system(tpl.Context("en", "Ada", "Team"), "members_added", "Ada").body == "Ada added you to Team"
