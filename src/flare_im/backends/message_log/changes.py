"""What a Change does to stored bodies and reactions, shared by the adapters so that they apply it alike."""

from __future__ import annotations

from typing import Any

EDIT_REFS = ("target", "target_id", "version")  # what an edit event keeps once its target's content is gone
QUOTE_REFS = ("seq", "msg_id", "sender", "kind")  # what a reply keeps of a quote of a message that is gone


def reply_seq(body: dict[str, Any]) -> int | None:
    """The seq of the message ``body`` quotes (its ``reply_to``), if any."""
    quoted = body.get("reply_to")
    return quoted.get("seq") if isinstance(quoted, dict) else None


def edit_refs(body: dict[str, Any]) -> dict[str, Any]:
    """An edit event's body reduced to its references (the new text it carried is dropped)."""
    return {k: body[k] for k in EDIT_REFS if k in body}


def unquote(body: dict[str, Any], target: int, state: str) -> bool:
    """Reduce ``body``'s quote of ``target`` to its references plus ``state``; False if it quotes none."""
    quoted = body.get("reply_to")
    if not isinstance(quoted, dict) or quoted.get("seq") != target:
        return False
    body["reply_to"] = {k: quoted[k] for k in QUOTE_REFS if k in quoted}
    body["reply_to"]["state"] = state
    return True


def unquoted(body: dict[str, Any], target: int, state: str) -> dict[str, Any] | None:
    """A copy of ``body`` with its quote of ``target`` reduced (see ``unquote``); None if it quotes none."""
    out = dict(body)
    return out if unquote(out, target, state) else None


def react(reactions: dict[str, list[str]], emoji: str, user: str, added: bool) -> dict[str, list[str]]:
    """``reactions`` after ``user`` added or removed ``emoji``: a new reaction goes last, an emoji nobody
    uses any more is gone."""
    out = dict(reactions)
    users = [u for u in out.get(emoji, []) if u != user]
    if added:
        users.append(user)
    if users:
        out[emoji] = users
    else:
        out.pop(emoji, None)
    return out
