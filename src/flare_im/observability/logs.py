"""Structured logs: one JSON object per line, for our loggers and for the libraries' (uvicorn, picows, aiokafka).

Fields (docs/operations.md): ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``msg``; ``exc``
(the traceback as one string) when there is one; and, where they apply, ``request_id`` (REST), ``user``,
``device``, ``conv``; ``trace_id`` and ``span_id`` of the current span when tracing is on (tracing.py sets the
hook). The ids come from ``extra=`` on the call (``log_ids``) or from the request's context (``bind``).
Nothing a client sends in a body is ever put in a line, nor tokens or secrets: callers log ids and counts, and
the formatter redacts anything token-shaped that reaches it anyway (a library quoting a header or a URL).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import logging.config
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

ID_FIELDS = ("request_id", "user", "device", "conv", "trace_id", "span_id")
_context: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("flare_log_ids", default=None)
_trace_ids: Callable[[], Mapping[str, str] | None] | None = None  # tracing on: the current span's ids


def set_trace_ids(hook: Callable[[], Mapping[str, str] | None] | None) -> None:
    global _trace_ids
    _trace_ids = hook


# JWTs (three base64url parts, the first a JSON header), bearer credentials, and key=value secrets in URLs
# or messages. Redaction is the last line of defence, not the rule: code logs ids, never values.
_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|(?i:(?:token|password|secret|key|authorization)[\"']?\s*[=:]\s*[\"']?(?:bearer\s+)?)[^\s\"'&,}]{4,}"
)


def redact(text: str) -> str:
    return _SECRETS.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    found = match.group()
    for sep in ("=", ":"):  # keep the name of a key=value pair, drop the value
        if sep in found and not found.startswith("eyJ"):
            name = found.split(sep, 1)[0]
            return f"{name}{sep}[redacted]"
    if found[:6].lower() == "bearer":
        return "Bearer [redacted]"
    return "[redacted]"


def log_ids(user: str = "", device: str = "", conv: str = "") -> dict[str, str]:
    """``extra=`` for a log call about a user's device and conversation (empty ones are left out)."""
    return {k: v for k, v in (("user", user), ("device", device), ("conv", conv)) if v}


def bind(**ids: str) -> contextvars.Token[Mapping[str, str] | None]:
    """Adds ids to every line logged from this context on (a request's task); ``unbind`` with the token."""
    current = _context.get()
    merged = dict(current) if current else {}
    merged.update((k, v) for k, v in ids.items() if v)
    return _context.set(merged)


def unbind(token: contextvars.Token[Mapping[str, str] | None]) -> None:
    _context.reset(token)


class JsonFormatter(logging.Formatter):
    """Every record as one line of JSON, whatever its message holds (quotes, newlines, a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(_message(record)),
        }
        bound = _context.get()
        if bound:
            line.update(bound)
        if _trace_ids is not None and (ids := _trace_ids()):
            line.update(ids)
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value:
                line[name] = str(value)
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))  # compact: one grep-able form


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string in a library's call: keep the line, and valid
        return f"{record.msg!r} {record.args!r}"


class ShutdownCancelsAsWarnings(logging.Filter):
    """uvicorn's ERROR lines for a request still open when the shutdown grace ran out, at WARNING, without the
    traceback: a client that holds a request open (a body that never ends) causes them, and no client may
    produce an ERROR line (docs/operations.md alerts on those). Other errors pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError) or "timeout graceful shutdown exceeded" in str(record.msg):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if exc is not None:
                record.msg = f"{_message(record).strip()}: request cancelled at shutdown ({exc})"
                record.args = None
                record.exc_info = record.exc_text = None
        return True


# Libraries chatty at INFO about what a client does (uvicorn's per-connection lines, picows' handshakes).
_QUIET = ("picows", "aiokafka", "uvicorn.access")


def logging_config(level: str) -> dict[str, Any]:
    """The dictConfig for a process: one stderr handler with JsonFormatter on the root logger; uvicorn's and
    the libraries' loggers propagate to it instead of their own plain-text handlers."""
    level = level.upper()
    quiet = max(logging.WARNING, logging.getLevelName(level) if isinstance(logging.getLevelName(level), int) else 0)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"shutdown_cancels": {"()": ShutdownCancelsAsWarnings}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stderr}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own config would add plain-text handlers to these: they propagate to ours instead.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True, "filters": ["shutdown_cancels"]},
            **{name: {"level": logging.getLevelName(quiet), "handlers": [], "propagate": True} for name in _QUIET},
        },
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)  # warnings.warn lines become records too (JSON), not raw stderr text
