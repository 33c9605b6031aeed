"""The one HTTP client each push adapter keeps for the life of the process."""

from __future__ import annotations

import ssl

import httpx


def http_client(
    *, http2: bool, ca_file: str = "", timeout_s: float = 10.0, max_connections: int = 100
) -> httpx.AsyncClient:
    """An httpx client with pooled (and, with ``http2``, multiplexed) connections. ``ca_file`` adds a CA bundle
    to trust besides the system's (a test's self-signed provider, a TLS-inspecting proxy). Outbound proxies come from
    HTTPS_PROXY / NO_PROXY, as for any httpx client."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return httpx.AsyncClient(
        http2=http2,
        verify=context,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
