"""Request ids, the access log and the request metrics (api.metrics), as one plain ASGI
middleware (outermost: it sees every answer).

Each request gets an id (the client's ``X-Request-Id`` if it is a short token, else a new one),
returned in the ``X-Request-Id`` header and carried by every log line written while serving it.
The access line holds method, path (never the query string: a key or a customer id could be in
it; a customer id in the path is left out too), status,
duration, client address and, once authenticated, the key's prefix and role.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import record
from core.logs import REQUEST_ID

log = logging.getLogger("api.access")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# A key in a path (DELETE /api/v1/keys/<key>) is logged as its prefix only, as everywhere.
_KEY_IN_PATH = re.compile(r"(isk_[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+")
# A customer id in a path (DELETE /api/v1/customers/<id>, an erasure) is personal data: not logged.
_CUSTOMER_IN_PATH = re.compile(r"^(/api/v1/customers/)[^/]+")


def loggable_path(path: str) -> str:
    return _CUSTOMER_IN_PATH.sub(r"\1…", _KEY_IN_PATH.sub(r"\1…", path))


# Who is calling, filled in by the authentication dependency (api.deps.current_key).
CALLER: ContextVar[dict[str, str] | None] = ContextVar("caller", default=None)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if _CLIENT_ID.match(given):
                return given
            break
    return os.urandom(8).hex()  # as random as uuid4's first 16 hex digits, cheaper


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        id_token = REQUEST_ID.set(request_id)
        caller: dict[str, str] = {}
        caller_token = CALLER.set(caller)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            record(scope, status["code"], seconds)
            if log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                fields: dict[str, Any] = {
                    "method": scope["method"],
                    "path": loggable_path(scope["path"]),
                    "status": status["code"],
                    "duration_ms": round(seconds * 1000, 2),
                    "client": client[0] if client else None,
                    **caller,
                }
                log.info(
                    "%s %s %d", fields["method"], fields["path"], fields["status"], extra=fields
                )
            CALLER.reset(caller_token)
            REQUEST_ID.reset(id_token)
