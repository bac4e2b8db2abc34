"""Helpers for integration tests: service subprocesses, producing events, waiting on conditions.

The worker and the API run as the same CLI commands docker-compose runs
(``interaction-summary worker`` / ``interaction-summary api``), as subprocesses with the
environment ``core.config.to_env`` gives for a test's settings.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from core.config import Settings
from core.roles import erasure_grants
from embedded.processes import Process, cli_argv, free_port, service_env


async def wait_until(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value, and return that value.

    Fails with ``message`` and the last value seen once ``timeout`` seconds have passed.
    Exceptions from ``predicate`` propagate: a condition that cannot be evaluated is a bug.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(
                f"condition not met within {timeout}s: {text} (last value: {value!r})"
            )
        await asyncio.sleep(interval)


class ServiceProcess(Process):
    """A service (worker or API) running as a subprocess, logging to a file."""

    async def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until ``text`` appears in the log (since the latest start)."""

        def seen() -> bool:
            if not self.running:
                raise AssertionError(
                    f"{self.name} exited with {self.returncode} before logging {text!r}:\n{self.log_tail()}"
                )
            return text in self.logs_since_start()

        await wait_until(
            seen, timeout, 0.1, lambda: f"{self.name} never logged {text!r}:\n{self.log_tail()}"
        )


class ApiProcess(ServiceProcess):
    """The API subprocess; ``url`` is its base URL."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        super().__init__("api", argv, log_path, env=env, url=f"http://127.0.0.1:{port}")
        self.port = port

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:

            async def healthy() -> bool:
                if not self.running:
                    raise AssertionError(f"api exited with {self.returncode}:\n{self.log_tail()}")
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, timeout, 0.1, lambda: f"api not healthy:\n{self.log_tail()}")


# The CLI commands the tests run the services with; docker-compose.yml runs the same ones
# (tests/integration/test_compose.py checks it).
WORKER_COMMAND = ("worker",)
API_COMMAND = ("api",)


async def run_cli(
    settings: Settings, *args: str, stdin: bytes | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``interaction-summary ARGS`` to completion for ``settings``; output is captured."""
    process = await asyncio.create_subprocess_exec(
        *cli_argv(*args),
        env=service_env(settings, COLUMNS="200"),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


def start_worker(settings: Settings, log_dir: Path, name: str = "worker") -> ServiceProcess:
    """``interaction-summary worker`` for ``settings``; it starts consuming in the background."""
    worker = ServiceProcess(
        name, cli_argv(*WORKER_COMMAND), log_dir / f"{name}.log", env=service_env(settings)
    )
    worker.start()
    return worker


async def start_api(settings: Settings, log_dir: Path, name: str = "api") -> ApiProcess:
    """``interaction-summary api`` on a free port, returned once GET /health answers 200."""
    port = free_port()
    api = ApiProcess(
        cli_argv(*API_COMMAND, "--port", str(port), "--log-level", "warning"),
        service_env(settings),
        log_dir / f"{name}.log",
        port,
    )
    api.start()
    try:
        await api.wait_healthy()
    except BaseException:
        api.stop()
        raise
    return api


def encode_event(event: dict[str, Any] | bytes) -> tuple[bytes | None, bytes]:
    """Kafka key and value: a dict is keyed by its ``customerId``; bytes go as they are, unkeyed."""
    if isinstance(event, bytes):
        return None, event
    customer = event.get("customerId")
    return (str(customer).encode() if customer is not None else None), orjson.dumps(event)


async def produce(
    settings: Settings,
    events: Sequence[dict[str, Any] | bytes],
    *,
    topic: str | None = None,
    partition: int | None = None,
) -> list[Any]:
    """Publish ``events`` to ``settings.topic`` (or ``topic``) and wait until all are acknowledged.

    Returns the record metadata (topic, partition, offset) of each, in order.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for event in events:
            key, value = encode_event(event)
            futures.append(
                await producer.send(
                    topic or settings.topic, value=value, key=key, partition=partition
                )
            )
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def grant_erasure(settings: Settings, restricted: Settings) -> None:
    """Give the API role of ``restricted`` (made by the ``as_api_role`` fixture) the erasure
    grants (core.roles.erasure_grants), connecting as ``settings``' owner."""
    role = urlsplit(restricted.database_url).username
    assert role, restricted.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        for statement in erasure_grants(role):
            await conn.execute(statement)
    finally:
        await conn.close()
