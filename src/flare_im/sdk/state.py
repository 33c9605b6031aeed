"""A client-side copy of conversations, kept by applying the event stream in seq order.

Feed it every message ``FlareClient.messages()`` yields (with ``echo_own=True`` that includes this
device's own events) and every ``Hidden`` from ``next_hidden()``. Operation events (recall, delete, edit,
react, unreact) change their target the way the server's log does, so a device that was offline, or
pulled a target already in its newer state, converges to the server's history (docs/protocol.md,
"Message operations"). Applying an event twice changes nothing.
"""

from __future__ import annotations

import msgspec

from flare_im.backends.message_log.changes import edit_refs, unquoted
from flare_im.protocol.frames import Hidden, Message

GONE = ("recalled", "deleted")  # message states whose content was removed for everyone
_STATE = {"recall": "recalled", "delete": "deleted"}
_replace = msgspec.structs.replace


class ConversationView:
    """Messages of every conversation fed to it, in their current state, plus what this user hid.

    ``messages[conv][seq]`` is the ``Message`` as it should be shown (operation events are kept at their
    own seqs too); ``hidden[conv]`` is the set of seqs deleted for this user. Not thread-safe, no I/O.
    """

    def __init__(self) -> None:
        self.messages: dict[str, dict[int, Message]] = {}  # conv -> seq -> message, current state
        self.hidden: dict[str, set[int]] = {}  # conv -> seqs deleted for me

    def apply(self, event: Message) -> None:
        """Add a message or operation event; an event also changes its target (recall and delete empty it
        and scrub quotes and edit events of it, edit replaces its body if newer, react/unreact change its
        reactions). Feed events in seq order per conversation, as ``FlareClient.messages()`` yields them;
        a seq already applied is ignored."""
        conv = self.messages.setdefault(event.conv, {})
        if event.seq in conv:
            return
        conv[event.seq] = self._shown(event)
        target_seq = event.body.get("target")
        if not isinstance(target_seq, int) or event.kind not in ("recall", "delete", "edit", "react", "unreact"):
            return
        if event.kind in _STATE:
            # Whatever this device holds of the target (even when the target itself is not shown here)
            # loses its content; scrubbing twice changes nothing.
            self._scrub(conv, target_seq, _STATE[event.kind])
        target = conv.get(target_seq)
        if target is None or target.state in GONE or target.state == "hidden":
            return  # not held (below this user's floor), gone, or deleted for me: nothing to show changes
        version = event.body.get("version", target.version)
        if event.kind in _STATE:
            if version > target.version:
                conv[target_seq] = _replace(
                    target, body={}, state=_STATE[event.kind], reactions={}, version=version, edited_at=0
                )
        elif event.kind == "edit":
            # An edit event without its body was pulled after a recall of the target that this device has
            # not reached yet: the recall, later in the stream, removes the content anyway.
            if version > target.version and "body" in event.body:
                conv[target_seq] = _replace(target, body=event.body["body"], version=version, edited_at=event.ts)
        else:
            emoji = event.body["emoji"]
            current = target.reactions.get(emoji, [])
            if event.kind == "react":
                users = current if event.sender in current else [*current, event.sender]
            else:
                users = [u for u in current if u != event.sender]
            reactions = dict(target.reactions)
            if users:
                reactions[emoji] = users
            else:
                reactions.pop(emoji, None)
            conv[target_seq] = _replace(target, reactions=reactions)

    def apply_hidden(self, hidden: Hidden) -> None:
        """Mark ``hidden.seqs`` as deleted for this user: held copies become tombstones (``state="hidden"``,
        empty body), and so do those seqs when they arrive later. Idempotent."""
        seqs = self.hidden.setdefault(hidden.conv, set())
        seqs.update(hidden.seqs)
        conv = self.messages.get(hidden.conv, {})
        for seq in hidden.seqs:
            if seq in conv:
                conv[seq] = _hidden(conv[seq])

    def history(self, conv: str) -> list[Message]:
        """What the user sees: messages in seq order, deleted-for-me ones as ``hidden`` tombstones."""
        held = self.messages.get(conv, {})
        return [held[seq] for seq in sorted(held)]

    def _shown(self, event: Message) -> Message:
        return _hidden(event) if event.seq in self.hidden.get(event.conv, ()) else event

    def _scrub(self, conv: dict[int, Message], target: int, state: str) -> None:
        """The content of a recalled message goes from everything that carried it: edit events of it
        keep their references only; quotes of it keep who/what, not the text."""
        for seq, m in list(conv.items()):
            if m.state == "hidden":
                continue
            if m.kind == "edit" and m.body.get("target") == target:
                conv[seq] = _replace(m, body=edit_refs(m.body))
            elif m.kind == "edit" and isinstance(m.body.get("body"), dict):
                edited = unquoted(m.body["body"], target, state)  # an edit of a reply to it
                if edited is not None:
                    conv[seq] = _replace(m, body={**m.body, "body": edited})
            else:
                body = unquoted(m.body, target, state)
                if body is not None:
                    conv[seq] = _replace(m, body=body)


def _hidden(m: Message) -> Message:
    return _replace(m, body={}, state="hidden", reactions={}, version=1, edited_at=0)
