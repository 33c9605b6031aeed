"""Notification texts per message kind and locale (N4): who wrote, where, and a snippet or a placeholder.

A locale is chosen from the device's registered language tag: ``zh``, ``zh-CN``, ``zh_Hant`` … use the Chinese
texts, everything else the English ones. Adding a language is adding one dict to ``TEXTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SNIPPET_CHARS = 120

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "image": "[Image]",
        "file": "[File] {name}",
        "voice": "[Voice message]",
        "video": "[Video]",
        "location": "[Location] {name}",
        "custom": "[Message]",
        "merged": "[Chat history]",
        "system": "[Group update]",
        "new_message": "New message",
        "new_messages": "{count} new messages",
        "burst": "{count} new messages from {sender}",
        "group_line": "{sender}: {text}",
        "mention": "{sender} mentioned you: {text}",
        "recalled": "{sender} recalled a message",
        "deleted": "A message was deleted",
        "call": "Incoming call from {sender}",
        "added": "{actor} added you to {group}",
        "removed": "{actor} removed you from {group}",
    },
    "zh": {
        "image": "[图片]",
        "file": "[文件] {name}",
        "voice": "[语音]",
        "video": "[视频]",
        "location": "[位置] {name}",
        "custom": "[消息]",
        "merged": "[聊天记录]",
        "system": "[群组更新]",
        "new_message": "你收到一条新消息",
        "new_messages": "{count} 条新消息",
        "burst": "{sender} 发来 {count} 条新消息",
        "group_line": "{sender}\uff1a{text}",  # a full-width colon
        "mention": "{sender} 在群聊中@了你\uff1a{text}",
        "recalled": "{sender} 撤回了一条消息",
        "deleted": "一条消息已被删除",
        "call": "{sender} 邀请你通话",
        "added": "{actor} 邀请你加入了 {group}",
        "removed": "{actor} 将你移出了 {group}",
    },
}


def language(locale: str) -> str:
    """The TEXTS key for a device's language tag."""
    primary = locale.replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in TEXTS else "en"


def text(lang: str, key: str, **values: Any) -> str:
    return TEXTS[lang][key].format(**values).strip()


def snippet(lang: str, kind: str, body: dict[str, Any], limit: int = SNIPPET_CHARS) -> str:
    """What a message says in one line: the start of a text, else its kind's placeholder."""
    if kind == "text":
        raw = body.get("text")
        line = " ".join(raw.split()) if isinstance(raw, str) else ""
        return line if len(line) <= limit else line[: limit - 1] + "…"
    if kind in TEXTS[lang]:
        name = body.get("name")
        return text(lang, kind, name=name if isinstance(name, str) else "")
    return TEXTS[lang]["custom"]


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    body: str


@dataclass(frozen=True, slots=True)
class Context:
    """Who and where, as the recipient sees them."""

    lang: str
    sender: str  # the sender's display name
    group: str = ""  # the group's name ("" in a direct conversation)
    preview: bool = True


def render_message(ctx: Context, kind: str, body: dict[str, Any], *, mention: bool = False) -> Rendered:
    """A message's notification: direct — title the sender, body the snippet; group — title the group, body
    "sender: snippet". Without preview: "New message" and nothing else."""
    if not ctx.preview:
        return Rendered("", text(ctx.lang, "new_message"))
    line = snippet(ctx.lang, kind, body)
    if mention:
        return Rendered(ctx.group or ctx.sender, text(ctx.lang, "mention", sender=ctx.sender, text=line))
    if ctx.group:
        return Rendered(ctx.group, text(ctx.lang, "group_line", sender=ctx.sender, text=line))
    return Rendered(ctx.sender, line)


def render_burst(ctx: Context, count: int) -> Rendered:
    """One notification for ``count`` messages of one conversation ("5 new messages from Ada")."""
    if not ctx.preview:
        return Rendered("", text(ctx.lang, "new_messages", count=count))
    if ctx.group:
        return Rendered(ctx.group, text(ctx.lang, "new_messages", count=count))
    return Rendered(ctx.sender, text(ctx.lang, "burst", count=count, sender=ctx.sender))


def render_recall(ctx: Context, op: str) -> Rendered:
    """What replaces the notification of a recalled (or deleted-for-everyone) message."""
    if not ctx.preview:
        return Rendered("", text(ctx.lang, "new_message"))
    key = "recalled" if op == "recall" else "deleted"
    return Rendered(ctx.group or ctx.sender, text(ctx.lang, key, sender=ctx.sender))


def render_call(ctx: Context) -> Rendered:
    return Rendered(ctx.group or ctx.sender, text(ctx.lang, "call", sender=ctx.sender if ctx.preview else ""))


def render_system(ctx: Context, event: str, actor: str) -> Rendered:
    """A membership change that concerns the recipient (added to or removed from a group)."""
    key = "added" if event in ("group_created", "members_added") else "removed"
    if not ctx.preview:
        return Rendered("", text(ctx.lang, "new_message"))
    return Rendered(ctx.group, text(ctx.lang, key, actor=actor, group=ctx.group))
