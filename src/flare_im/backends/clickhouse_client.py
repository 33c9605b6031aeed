"""A small async ClickHouse client: one SQL statement in, the bytes it outputs back, over HTTP or in-process.

Two transports behind one protocol, chosen by URL:

- ``clickhouse://[user[:password]@]host[:port]/database``: a ClickHouse server over its HTTP interface
  (port 8123 by default), with plain aiohttp. Not aiochclient: the adapters write with ``FORMAT JSONEachRow``
  and read with ``FORMAT JSONEachRow`` and decode rows with msgspec themselves, so that the *same SQL text and
  the same formats* go through both transports (chdb has no aiochclient) and the only engine difference left is
  the transport. aiochclient would add its own value formatting and TSV type conversion on one side only.
  (clickhouse-connect refuses servers older than ~22.x; the native protocol clients add nothing we need.)
- ``chdb:///relative/dir`` or ``chdb:////absolute/dir`` (the ``sqlite://`` convention): current ClickHouse
  in-process through chdb, with its data in that directory. chdb's API is synchronous: every statement runs on
  a worker thread (``asyncio.to_thread``); a chdb session is thread-safe. chdb runs one data directory per
  process at a time: sessions on the same directory share it, a session on another one fails while any is open.

No server-side query parameters (ClickHouse 18.16 has none): callers build literals with ``quote``.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp

DEFAULT_HTTP_PORT = 8123
# 18.16 quotes 64-bit integers in JSON output unless told not to; current ClickHouse does not by default.
_HTTP_SETTINGS = {"output_format_json_quote_64bit_integers": "0"}
_ERROR_CODE = re.compile(r"Code: (\d+)")


class ClickHouseError(Exception):
    """A statement failed on the engine (``code`` is ClickHouse's error code when it gave one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        found = _ERROR_CODE.search(message)
        self.code = int(found.group(1)) if found else None


class ClickHouseClient(Protocol):
    async def query(self, sql: str) -> bytes:
        """Run one statement; returns what it outputs (in the ``FORMAT`` the statement names, if any)."""
        ...

    async def insert(self, statement: str, data: bytes) -> None:
        """Run ``statement`` (``INSERT INTO t (...) FORMAT F``) with ``data`` in format F; returns once the
        engine has written it (visible to every later query)."""
        ...

    async def close(self) -> None: ...


def quote(value: str) -> str:
    """``value`` as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def connect(url: str, *, timeout_s: float = 30.0, max_connections: int = 16) -> ClickHouseClient:
    """A client for ``url`` (see the module docstring). ``timeout_s`` and ``max_connections`` bound the HTTP
    transport: a statement that takes longer fails, and at most that many statements run at once."""
    if url.startswith("chdb://"):
        return ChdbClient(parse_chdb_url(url))
    parts = urlsplit(url)
    if parts.scheme != "clickhouse" or not parts.hostname:
        raise ValueError(f"not a ClickHouse URL (clickhouse://host:port/database or chdb:///path): {url!r}")
    database = parts.path.strip("/") or "default"
    return HttpClient(
        f"http://{parts.hostname}:{parts.port or DEFAULT_HTTP_PORT}/",
        database=database,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout_s=timeout_s,
        max_connections=max_connections,
    )


def parse_chdb_url(url: str) -> str:
    """``chdb:///relative/dir`` or ``chdb:////absolute/dir`` -> the absolute directory."""
    rest = url[len("chdb://") :]
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
        raise ValueError(f"chdb URL must look like chdb:///dir or chdb:////abs/dir, got {url!r}")
    return str(Path(rest[1:]).resolve())


class HttpClient:
    """A ClickHouse server over HTTP. The session is created on first use, inside the running loop."""

    def __init__(
        self,
        base_url: str,
        *,
        database: str,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        self._base_url = base_url
        self.database = database
        self._params = {"database": database, **_HTTP_SETTINGS}
        # HTTP basic auth: every ClickHouse release reads it (the X-ClickHouse-* headers came later).
        self._headers: dict[str, str] = {}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            # trust_env stays off: an http_proxy variable must not reroute the database connection.
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers)
        return self._session

    async def _post(self, params: dict[str, str], body: bytes) -> bytes:
        async with self._http().post(self._base_url, params=params, data=body) as response:
            payload = await response.read()
            if response.status != 200:
                raise ClickHouseError(payload.decode("utf-8", "replace").strip())
            return payload

    async def query(self, sql: str) -> bytes:
        return await self._post(self._params, sql.encode())

    async def insert(self, statement: str, data: bytes) -> None:
        await self._post({**self._params, "query": statement}, data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ChdbClient:
    """Current ClickHouse in this process (chdb), on a data directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._session: Any = None
        self._opening = asyncio.Lock()

    async def _open(self) -> Any:
        async with self._opening:
            if self._session is None:
                self._session = await asyncio.to_thread(_chdb_session, self.path)
            return self._session

    async def _run(self, sql: str, fmt: str) -> bytes:
        session = self._session or await self._open()
        try:
            result = await asyncio.to_thread(session.query, sql, fmt)
        except Exception as exc:  # chdb raises ChdbError or RuntimeError with ClickHouse's message
            raise ClickHouseError(str(exc)) from exc
        payload: bytes = result.bytes()
        return payload

    async def query(self, sql: str) -> bytes:
        # The statement's own FORMAT clause wins; TabSeparated is only the default for statements without one.
        return await self._run(sql, "TabSeparated")

    async def insert(self, statement: str, data: bytes) -> None:
        await self._run(f"{statement}\n{data.decode()}", "TabSeparated")

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await asyncio.to_thread(session.close)


def _chdb_session(path: str) -> Any:
    from chdb import session  # imported on use: loading the engine takes ~450 MB and a second

    Path(path).mkdir(parents=True, exist_ok=True)
    return session.Session(path)
