"""`flare migrate` (cli.py, migrate.py) against a temporary SQLite file and a real PostgreSQL, and the
composition root's refusal to start on a PostgreSQL schema that is behind."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from flare_im.app import build_node
from flare_im.backends.migrations import PostgresMigrator, Schema, SchemaError
from flare_im.backends.relational.postgres import SCHEMA as POSTGRES_SCHEMA
from flare_im.backends.relational.sqlite import SCHEMA as SQLITE_SCHEMA
from flare_im.cli import main
from flare_im.config import Settings
from flare_im.migrate import redact


def run(capsys: pytest.CaptureFixture[str], *args: str, component: str = "relational") -> tuple[int, list[str]]:
    """The exit code and what `flare migrate` printed about ``component`` (other components' lines left out)."""
    code = main(["migrate", *args])
    captured = capsys.readouterr()
    return code, of_component((captured.out + captured.err).splitlines(), component)


def of_component(lines: list[str], component: str) -> list[str]:
    kept, keep = [], True
    for line in lines:
        if not line.startswith(" "):  # a component's line ("relational: ...", "webhooks schema at ...") or an error
            header = re.match(r"^([a-z_]+)(?::| schema at )", line)
            keep = header is None or header[1] in ("flare", component)
        if keep:
            kept.append(line)
    return kept


def test_sqlite_status_then_migrate_then_up_to_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = str(tmp_path / "data")
    code, lines = run(capsys, "--status", "--data-dir", data_dir)
    assert code == 0
    assert lines[0].endswith(f"version 0 of {SQLITE_SCHEMA.latest}")
    assert [line.split()[:2] for line in lines[1:]] == [["pending", str(v)] for v in range(1, SQLITE_SCHEMA.latest + 1)]
    assert not (tmp_path / "data" / "flare.db").exists()  # --status changes nothing

    code, lines = run(capsys, "--data-dir", data_dir)
    assert code == 0
    assert lines == [f"relational: applied {m.version} {m.name}" for m in SQLITE_SCHEMA.migrations]

    code, lines = run(capsys, "--data-dir", data_dir)
    assert (code, len(lines)) == (0, 1)
    assert lines[0].endswith(f"up to date (version {SQLITE_SCHEMA.latest})")

    code, lines = run(capsys, "--status", "--data-dir", data_dir)
    assert lines[0].endswith(f"version {SQLITE_SCHEMA.latest} of {SQLITE_SCHEMA.latest}")
    assert [line.split()[:2] for line in lines[1:]] == [["applied", str(v)] for v in range(1, SQLITE_SCHEMA.latest + 1)]


def test_sqlite_file_made_before_versioning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "flare.db") as conn:  # the schema before delete-for-me
        for migration in SQLITE_SCHEMA.migrations[:3]:
            for step in migration.steps:
                step(conn) if callable(step) else conn.execute(step)
    conn.close()
    code, lines = run(capsys, "--status", "--data-dir", str(tmp_path / "data"))
    assert lines[0].endswith(f"version 3 of {SQLITE_SCHEMA.latest}")
    assert "made before versioning" in lines[1]
    assert [line.split()[:2] for line in lines[4:]] == [
        ["pending", str(m.version)] for m in SQLITE_SCHEMA.migrations[3:]
    ]
    code, lines = run(capsys, "--data-dir", str(tmp_path / "data"))
    assert code == 0
    assert lines == [f"relational: applied {m.version} {m.name}" for m in SQLITE_SCHEMA.migrations[3:]]
    assert lines[0] == "relational: applied 4 hidden messages (delete for me)"


def test_unsupported_url_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLARE_DATABASE_URL", "mysql://db/flare")
    code, lines = run(capsys, "--data-dir", str(tmp_path))
    assert code == 1
    assert lines == ["flare: unsupported database_url 'mysql://db/flare' (sqlite://, postgresql://)"]


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://flare:s3cret@db:5432/flare") == "postgresql://flare:***@db:5432/flare"
    assert redact("postgresql://postgres@127.0.0.1/flare") == "postgresql://postgres@127.0.0.1/flare"


def test_postgres_migrate_and_status(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLARE_DATABASE_URL", postgres_url)
    code, lines = run(capsys, "--status", "--data-dir", str(tmp_path))
    assert (code, lines[0]) == (0, f"relational schema at {postgres_url}: version 0 of {POSTGRES_SCHEMA.latest}")
    code, lines = run(capsys, "--data-dir", str(tmp_path))
    assert lines == [f"relational: applied {m.version} {m.name}" for m in POSTGRES_SCHEMA.migrations]
    code, lines = run(capsys, "--data-dir", str(tmp_path))
    assert lines == [f"relational schema at {postgres_url}: up to date (version {POSTGRES_SCHEMA.latest})"]
    code, lines = run(capsys, "--status", "--data-dir", str(tmp_path))
    assert lines[1].split()[:2] == ["applied", "1"]


def test_postgres_unreachable_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLARE_DATABASE_URL", "postgresql://flare:pw@127.0.0.1:1/flare")
    code, lines = run(capsys, "--data-dir", str(tmp_path))
    assert code == 1
    assert lines[0].startswith("flare: postgresql://flare:***@127.0.0.1:1/flare: ")


async def test_node_refuses_a_postgres_schema_that_is_behind_then_runs_after_migrate(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings.load({"data_dir": str(tmp_path), "database_url": postgres_url}, environ={})
    latest = POSTGRES_SCHEMA.latest
    with pytest.raises(SchemaError, match=rf"version 0, this code needs {latest}: run `flare migrate`"):
        await build_node(settings)
    assert not (tmp_path / "flare.db").exists()  # refused before anything was opened

    # A database of the first release, with a user in it: upgraded in place.
    conn = await asyncpg.connect(postgres_url)
    try:
        first_release = Schema("relational", POSTGRES_SCHEMA.migrations[:1])
        await PostgresMigrator(conn, first_release).apply()
        await conn.execute("INSERT INTO users VALUES ('carol', 'carol', NULL, 'Carol', '', 1)")
    finally:
        await conn.close()
    with pytest.raises(SchemaError, match=rf"version 1, this code needs {latest}: run `flare migrate`"):
        await build_node(settings)

    from flare_im.migrate import migrate

    [state] = [s for s in await migrate(settings, apply=True) if s.component == "relational"]
    assert [m.version for m in state.just_applied] == list(range(2, latest + 1))
    node = await build_node(settings)
    try:
        assert (await node.api.users.get("carol")).display_name == "Carol"  # kept by the upgrade
        await node.api.users.create_by_admin("alice")
        assert (tmp_path / "flare.db").exists()  # the message log stays embedded
    finally:
        await node.close()
    node = await build_node(settings)
    try:
        assert (await node.api.users.get("alice")).uid == "alice"  # kept in PostgreSQL
        await node.api.users.create_by_admin("bob")
        message, _ = await node.router.send(
            "alice", "d:alice:bob", "c1", "text", {"text": "hi @bob", "mentions": ["bob"]}
        )
    finally:
        await node.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        row = await conn.fetchrow("SELECT read_seq FROM members WHERE uid = 'alice' AND conv = 'd:alice:bob'")
        assert row["read_seq"] == message.seq  # mark_sent went through the PostgreSQL batcher
        assert await conn.fetchval("SELECT count(*) FROM mentions WHERE uid = 'bob'") == 1
    finally:
        await conn.close()
