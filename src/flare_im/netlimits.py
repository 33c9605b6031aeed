"""Limits on what one network peer may hold open: connections per IP address, shared by the API and the
WebSocket listeners of a node.

Both listeners draw on one descriptor limit, so a peer that opens hundreds of idle REST connections could
starve the WebSocket. Each accepted connection is counted against its peer's address; past
``per_ip`` the connection is refused at once (the API answers 429, the WebSocket closes with 4029). Peers in
``exempt`` (a load balancer that carries many clients on its own address, say) are never counted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks_of(*texts: str) -> tuple[Network, ...]:
    """The networks of comma-separated IPs/CIDRs (``"10.0.0.0/8, ::1"``); ValueError for a bad one."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for text in texts for p in text.split(",") if p.strip())


def peer_address(peername: object) -> str | None:
    """The IP address of a socket's ``getpeername()`` (a tuple for TCP), or None for a Unix socket."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None


@dataclass(slots=True)
class PeerConnections:
    """Open connections per peer address, one instance per node (shared by its listeners).

    ``acquire`` and ``release`` run on the event loop only; no lock is needed."""

    per_ip: int  # 0: no limit
    exempt: tuple[Network, ...] = ()
    _open: dict[str, int] = field(default_factory=dict)

    def acquire(self, address: str | None) -> bool:
        """Counts a new connection from ``address``; False (and nothing counted) when the peer is at its
        limit. A connection without an address (a Unix socket) is never refused."""
        if address is None or self.per_ip <= 0:
            return True
        count = self._open.get(address, 0)
        if count >= self.per_ip and not self._exempt(address):
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str | None) -> None:
        """Forgets one connection counted by ``acquire``."""
        if address is None or self.per_ip <= 0:
            return
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def open_from(self, address: str) -> int:
        return self._open.get(address, 0)

    def _exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.exempt)
