"""Fault injection for the reliability tests: servers a test may stop and start again.

- ``Restartable``: a server of one test only (its own Redis, Postgres or Tansu broker, never
  the session's shared ones), stopped, killed and started again on the same port.
- ``TcpProxy``: a link to Postgres that can be cut (open connections dropped, new ones
  refused) and restored, as when the database host goes away.

Publishing is in ``publishing.py``, the group's offsets and assignments in ``consumption.py``,
keys and the secret scan in ``credentials.py``, the API oracle in ``api_oracle.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from embedded.processes import HOST, Process, free_port
from embedded.servers import start_kafka, start_postgres, start_redis

# --- servers a test can stop ---------------------------------------------------------------


@dataclass
class Restartable:
    """A server of this test only, restarted on the same port (clients keep their address)."""

    name: str
    port: int
    log_path: Path
    launch: Callable[[int, Path], Process]
    process: Process | None = None
    starts: int = 0

    def start(self) -> Restartable:
        self.process = self.launch(self.port, self.log_path)
        self.starts += 1
        return self

    def stop(self) -> None:
        """A clean stop (SIGTERM); in-memory state (Tansu, our Redis) is gone with it."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to flush or shut down (a crash)."""
        if self.process is not None:
            self.process.kill()

    @property
    def url(self) -> str:
        assert self.process is not None
        return self.process.url


def own_redis(log_dir: Path) -> Restartable:
    """A Redis for one test: no persistence, so a restart brings it back empty."""
    return Restartable("redis", free_port(), log_dir / "redis.log", start_redis).start()


def own_postgres(log_dir: Path, password: str | None = None) -> Restartable:
    """A Postgres for one test, with production durability (fsync and synchronous_commit on,
    unlike the session's throwaway cluster); its data directory survives restarts."""
    data_dir = log_dir / "postgres-data"

    def launch(port: int, log_path: Path) -> Process:
        return start_postgres(data_dir, port, log_path, password=password, max_connections=50)

    return Restartable("postgres", free_port(), log_dir / "postgres.log", launch).start()


def own_kafka(log_dir: Path) -> Restartable:
    """A Tansu broker for one test, in-memory storage: a restart loses topics and offsets."""
    return Restartable("kafka", free_port(), log_dir / "kafka.log", start_kafka).start()


# --- a Postgres link that can be cut -------------------------------------------------------


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; ``cut()`` drops every connection and refuses
    new ones until ``restore()``.

    Runs on a thread of its own with its own event loop, so a test that blocks (waiting for a
    subprocess to exit) cannot stall the traffic it forwards.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections = 0  # accepted in total, to show clients really went through
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.BaseTransport] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def cut(self) -> None:
        """Stop listening (connections refused) and reset every open connection."""
        self._run(self._cut())

    def restore(self) -> None:
        self._run(self._listen())

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, HOST, self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._open):
            transport.abort()  # RST: the client sees the connection dropped, not a clean close
        self._open.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        if self._server is None:  # cut while we were connecting
            client_w.transport.abort()
            server_w.transport.abort()
            return
        pair = {client_w.transport, server_w.transport}
        self._open |= pair
        await asyncio.gather(
            _pipe(client_r, server_w), _pipe(server_r, client_w), return_exceptions=True
        )
        self._open -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


def dsn_through(dsn: str, port: int, password: str | None = None) -> str:
    """``dsn`` pointed at ``127.0.0.1:port``, with ``password`` if it has none of its own."""
    parts = urlsplit(dsn)
    user = parts.username or ""
    secret = parts.password or password
    auth = f"{user}:{secret}@" if secret else (f"{user}@" if user else "")
    return urlunsplit(parts._replace(netloc=f"{auth}{HOST}:{port}"))
