"""URLs, literals and version checks of the ClickHouse client and schema (no engine needed)."""

from __future__ import annotations

import os

import pytest

from flare_im.backends.clickhouse_client import ChdbClient, ClickHouseError, HttpClient, connect, quote
from flare_im.backends.message_log.clickhouse_schema import codecs_supported, schema


async def test_clickhouse_urls_pick_the_http_transport_and_database() -> None:
    client = connect("clickhouse://reader:s%3Acret@db.local:9123/flare")
    assert isinstance(client, HttpClient)
    assert client.database == "flare"
    assert isinstance(connect("clickhouse://127.0.0.1"), HttpClient)
    assert connect("clickhouse://127.0.0.1/").database == "default"  # type: ignore[attr-defined]


def test_chdb_urls_follow_the_sqlite_convention() -> None:
    absolute = connect("chdb:////var/lib/flare/log")
    assert isinstance(absolute, ChdbClient)
    assert absolute.path == "/var/lib/flare/log"
    relative = connect("chdb:///data/log")
    assert isinstance(relative, ChdbClient)
    assert relative.path == os.path.join(os.getcwd(), "data", "log")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8123/", "clickhouse:///db", "chdb://", "chdb:///", "chdb://relative", "chdb:///a?b=1"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        connect(url)


def test_quote_escapes_quotes_and_backslashes() -> None:
    assert quote("plain") == "'plain'"
    assert quote("o'brien") == "'o\\'brien'"
    assert quote("back\\slash'") == "'back\\\\slash\\''"


def test_error_code_is_parsed_from_the_message() -> None:
    assert ClickHouseError("Code: 62, e.displayText() = DB::Exception: Syntax error").code == 62
    assert ClickHouseError("connection reset").code is None


def test_codecs_only_from_20_1() -> None:
    assert not codecs_supported("18.16.1")
    assert not codecs_supported("19.17.4.11")
    assert codecs_supported("20.1.2.4")
    assert codecs_supported("26.9.2.1")
    assert all("CODEC" not in statement for statement in schema(codecs=False))
    assert all("CODEC(" in statement for statement in schema(codecs=True))
