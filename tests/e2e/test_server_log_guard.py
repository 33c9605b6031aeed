"""The e2e server fixture fails a test whose server logged a traceback or an ERROR line, or exited non-zero."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.e2e.conftest import ServerProcess, server_log_problems


def test_error_lines_are_recognised_in_both_log_formats() -> None:
    log = "\n".join(
        [
            '{"ts":"t","level":"WARNING","logger":"flare","msg":"client sent junk"}',
            '{"ts":"t","level":"ERROR","logger":"flare","msg":"send failed"}',
            "INFO:     Started server process [1]",
            "ERROR:    Exception in ASGI application",
            "Traceback (most recent call last):",
            '{"ts": "t", "level": "CRITICAL", "msg": "x"}',
        ]
    )
    assert len(server_log_problems(log)) == 4
    assert server_log_problems('{"level":"INFO","msg":"ERROR in a message text is fine"}') == []


def test_a_traceback_in_the_log_fails_the_stop(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    assert srv.log_path is not None
    with open(srv.log_path, "a") as log:  # as if the server had crashed in a handler
        log.write("Traceback (most recent call last):\n  ValueError: boom\n")
    with pytest.raises(AssertionError, match="the server logged 1 error lines"):
        srv.stop()


def test_a_server_that_expects_errors_may_log_them(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", expect_errors=True)
    srv.start()
    assert srv.log_path is not None
    with open(srv.log_path, "a") as log:
        log.write("Traceback (most recent call last):\n")
    assert srv.stop() == 0
