"""`flare migrate` brings the webhooks component (its own schema, beside the relational one) up to date on SQLite
and PostgreSQL; the PostgreSQL store then opens."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.test_migrate_cli import run

from flare_im.backends.webhooks.postgres import SCHEMA as POSTGRES_WEBHOOKS
from flare_im.backends.webhooks.postgres import PostgresWebhookStore
from flare_im.backends.webhooks.sqlite import SCHEMA as SQLITE_WEBHOOKS


def test_sqlite_migrate_applies_the_webhooks_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(tmp_path / "data")
    code, lines = run(capsys, "--status", "--data-dir", data_dir, component="webhooks")
    where = f"sqlite:///{data_dir}/flare.db"
    assert (code, lines[0]) == (0, f"webhooks schema at {where}: version 0 of {SQLITE_WEBHOOKS.latest}")
    assert lines[1].split()[:2] == ["pending", "1"]
    code, lines = run(capsys, "--data-dir", data_dir, component="webhooks")
    assert lines == [f"webhooks: applied {m.version} {m.name}" for m in SQLITE_WEBHOOKS.migrations]
    code, lines = run(capsys, "--data-dir", data_dir, component="webhooks")
    assert lines[0].endswith(f"up to date (version {SQLITE_WEBHOOKS.latest})")


async def test_postgres_migrate_then_the_store_opens(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flare_im.backends.migrations import SchemaError

    with pytest.raises(SchemaError):
        await PostgresWebhookStore.open(postgres_url)
    monkeypatch.setenv("FLARE_DATABASE_URL", postgres_url)
    import asyncio

    code, lines = await asyncio.to_thread(run, capsys, "--data-dir", str(tmp_path), component="webhooks")
    assert (code, lines) == (0, [f"webhooks: applied {m.version} {m.name}" for m in POSTGRES_WEBHOOKS.migrations])
    store = await PostgresWebhookStore.open(postgres_url)
    try:
        assert await store.endpoints() == []
    finally:
        await store.close()
