"""Delivery priority (services/priority.py): which frames are urgent or bulk, and bulk work waiting for urgent."""

from __future__ import annotations

import asyncio

from flare_im.protocol.frames import Msg, Receipt
from flare_im.services.priority import UrgentSends, is_bulk, is_call


def _msg(kind: str, cmid: str, body: dict[str, object]) -> Msg:
    return Msg(conv="d:a:b", seq=1, msg_id="1", sender="a", cmid=cmid, kind=kind, body=body, ts=1)


def test_calls_are_custom_messages_whose_data_type_is_call() -> None:
    assert is_call("custom", {"data": {"type": "call", "action": "invite"}})
    assert not is_call("custom", {"data": {"type": "poll"}})
    assert not is_call("custom", {"data": "call"})
    assert not is_call("text", {"text": "call", "data": {"type": "call"}})


def test_only_broadcast_notices_are_bulk() -> None:
    assert is_bulk(_msg("system", "bc:b1:bob", {"event": "notice"}))
    assert not is_bulk(_msg("system", "grp-join-1", {"event": "joined"}))  # a group's notice: normal
    assert not is_bulk(_msg("text", "bc:b1:bob", {"text": "a user's cmid may start so"}))
    assert not is_bulk(Receipt(conv="d:a:b", user="b", kind="read", seq=1))


async def test_bulk_work_waits_while_an_urgent_send_is_under_way() -> None:
    urgent = UrgentSends()
    await asyncio.wait_for(urgent.wait_clear(), 1)  # none: at once
    urgent.begin()
    urgent.begin()
    waiting = asyncio.ensure_future(urgent.wait_clear())
    await asyncio.sleep(0.01)
    urgent.end()
    await asyncio.sleep(0.01)
    assert not waiting.done()  # one still under way
    urgent.end()
    await asyncio.wait_for(waiting, 1)
    assert urgent.running == 0


class _Router:
    """Records the notices a broadcaster appends; the urgent counter is the real one."""

    def __init__(self) -> None:
        self.urgent = UrgentSends()
        self.sent: list[str] = []

    async def send(self, sender: str, conv: str, cmid: str, kind: str, body: object, **kw: object) -> tuple[None, bool]:
        self.sent.append(conv)
        await asyncio.sleep(0)
        return None, False


class _Gate:
    def ban_of(self, uid: str) -> None:
        return None


class _Store:
    async def broadcast_progress(self, broadcast_id: str, **kw: object) -> None:
        pass

    async def get_broadcast(self, broadcast_id: str) -> None:
        return None


async def test_a_broadcast_starts_no_notice_while_a_call_is_under_way() -> None:
    from flare_im.services.broadcast import Broadcaster, Chunk

    router = _Router()
    broadcaster = Broadcaster(
        store=_Store(),  # type: ignore[arg-type]
        publish=None,  # type: ignore[arg-type]
        topic="t",
        router=router,  # type: ignore[arg-type]
        users=None,  # type: ignore[arg-type]
        gate=_Gate(),  # type: ignore[arg-type]
        system_user="system",
        rate_per_s=0,
    )
    router.urgent.begin()  # a call is being appended and fanned out
    delivery = asyncio.ensure_future(broadcaster._deliver(Chunk("b1", {"text": "n"}, [f"u{i}" for i in range(50)])))
    await asyncio.sleep(0.05)
    assert router.sent == []
    router.urgent.end()
    await asyncio.wait_for(delivery, 5)
    assert len(router.sent) == 50
