"""Logging for every process: one JSON object per line, on stderr.

Each record carries ``ts`` (UTC, ISO-8601), ``level``, ``logger`` and ``message``; the request id
of the API request it belongs to (``request_id``); the event position fields ``event_id``,
``partition`` and ``offset`` when the code logging it knows them, given as ``extra`` or written
``partition=3`` in the message (the worker's messages already say so); and any other ``extra``.
Audit records (``audit`` logger) say who did what: see :func:`audit`.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

# The request id of the API request being served (set by api.access, read by the formatter).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has: whatever else a record carries came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Position fields lifted out of the message text ("event rejected partition=3 offset=17 ...").
_POSITION = re.compile(r"\b(event_id|partition|offset)=([^\s,;]+)")

AUDIT = logging.getLogger("audit")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises on odd ``extra`` values (they become strings)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for name, value in _POSITION.findall(message):
            line[name] = int(value) if value.isdigit() and name != "event_id" else value
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def logging_config(
    level: str = "INFO", formatter: type[logging.Formatter] = JsonFormatter
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: JSON to stderr, for the root and every library.

    Uvicorn's and Faust's own loggers propagate to the root, so their records are JSON too.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": formatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stderr}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # uvicorn installs handlers of its own unless told otherwise: route them to ours.
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # The access and audit logs are kept whatever the level of the rest.
            "api.access": {"level": "INFO"},
            "audit": {"level": "INFO"},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    """Install the JSON handler on the root logger (idempotent); Python warnings go through it."""
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)


def audit(action: str, actor: dict[str, str], **details: Any) -> None:
    """An audit line: ``action`` (e.g. ``key.create``), who (``actor``: key prefix, role, tenant,
    or the CLI's OS user) and what, on the ``audit`` logger at INFO. Never pass a key in clear."""
    AUDIT.info(action, extra={"audit": True, "action": action, "actor": actor, **details})
