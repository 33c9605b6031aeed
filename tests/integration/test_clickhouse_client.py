"""The HTTP transport of the ClickHouse client against the server of scripts/services.sh (ClickHouse 18.16)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from tests.services import require

from flare_im.backends.clickhouse_client import ClickHouseError, connect


def _with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{user}@{parts.hostname}:{parts.port}{parts.path}"


async def test_the_server_answers_and_reports_errors_with_their_code() -> None:
    client = connect(require("clickhouse"))
    try:
        assert await client.query("SELECT toUInt64(2) + 3 AS n FORMAT JSONEachRow") == b'{"n":5}\n'
        with pytest.raises(ClickHouseError) as error:
            await client.query("SELECT no_such_column")
        assert error.value.code == 47
    finally:
        await client.close()


async def test_credentials_in_the_url_are_sent() -> None:
    url = require("clickhouse")
    known = connect(_with_user(url, "default"))
    unknown = connect(_with_user(url, "nobody:wrong"))
    try:
        assert await known.query("SELECT 1 AS one FORMAT JSONEachRow") == b'{"one":1}\n'
        with pytest.raises(ClickHouseError) as error:
            await unknown.query("SELECT 1")
        assert error.value.code in (192, 193, 516)  # unknown user / wrong password / authentication failed
    finally:
        await known.close()
        await unknown.close()
