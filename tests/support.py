"""Helpers for integration tests: service subprocesses, producing events, waiting on conditions.

The worker and the API run as the same CLI commands docker-compose runs
(``interaction-summary worker`` / ``interaction-summary api``), as subprocesses with the
environment ``core.config.to_env`` gives for a test's settings.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from cli.embedded import free_port
from core.config import Settings, to_env
from core.roles import erasure_grants

# Variables of the test process that must not leak into a service's environment.
_SERVICE_ENV_PREFIXES = (
    "INTERACTION_SUMMARY_",
    "KAFKA_BOOTSTRAP_SERVERS",
    "DATABASE_URL",
    "REDIS_URL",
)


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


class ServiceProcess:
    """A service (worker or API) running as a subprocess, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ServiceProcess:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.starts += 1
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout``; returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL: the process gets no chance to commit or clean up (a crash)."""
        return self._signal(signal.SIGKILL, 10.0)

    def restart(self, *, kill: bool = False) -> ServiceProcess:
        """Stop (or kill) and start again with the same command and environment."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def _signal(self, sig: signal.Signals, timeout: float) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    async def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until ``text`` appears in the log (since the latest start)."""

        def seen() -> bool:
            if not self.running:
                raise AssertionError(
                    f"{self.name} exited with {self.returncode} before logging {text!r}:\n{self.log_tail()}"
                )
            return text in self.logs().rsplit("===== start #", 1)[-1]

        await wait_until(
            seen, timeout, 0.1, lambda: f"{self.name} never logged {text!r}:\n{self.log_tail()}"
        )


class ApiProcess(ServiceProcess):
    """The API subprocess; ``url`` is its base URL."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        super().__init__("api", argv, env, log_path)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

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


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment minus service settings, plus those of ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
    env.update(to_env(settings))
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# The CLI commands the tests run the services with; docker-compose.yml runs the same ones
# (tests/integration/test_compose.py checks it).
WORKER_COMMAND = ("worker",)
API_COMMAND = ("api",)


def cli_argv(*args: str) -> list[str]:
    """The ``interaction-summary`` CLI run by this interpreter."""
    return [sys.executable, "-m", "cli", *args]


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
    return ServiceProcess(
        name, cli_argv(*WORKER_COMMAND), service_env(settings), log_dir / f"{name}.log"
    ).start()


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
