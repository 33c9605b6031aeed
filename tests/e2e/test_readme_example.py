"""README's "A short session": its Python block, run as a user would, twice against one real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_URL = "http://127.0.0.1:8080"


def example_code() -> str:
    """The first ```python block after the "## A short session" heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## A short session\n", 1)[1]
    match = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert match is not None, "no python block in README's 'A short session'"
    return match.group(1)


def run_example(script: Path) -> list[str]:
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_short_session_runs_twice(server: ServerProcess, tmp_path: Path) -> None:
    code = example_code()
    assert EXAMPLE_URL in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(EXAMPLE_URL, server.api_url), encoding="utf-8")

    runs = [run_example(script), run_example(script)]
    suffixes = []
    for lines in runs:
        assert len(lines) == 4, lines
        assert re.fullmatch(r"stored as seq 1 id \d+", lines[0]), lines
        got = re.fullmatch(r"bob got 'hi bob!' from alice-(\w+)", lines[1])
        assert got is not None, lines
        run = got.group(1)
        assert lines[2] == f"bob-{run} read up to seq 1"
        assert lines[3] == f"d:alice-{run}:bob-{run} unread: 0"
        suffixes.append(run)
    assert suffixes[0] != suffixes[1]
    assert server.proc is not None
    assert server.proc.poll() is None  # the server is still serving
