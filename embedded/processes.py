"""Child processes that log to a file and die with their parent, and the ports they listen on.

One class (``Process``) for every child the project starts: the embedded servers, the worker
and API that ``up``, the tests and the benchmarks run, the demo producer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from core.config import Settings, to_env

HOST = "127.0.0.1"

# Variables of the parent that must not leak into a service's environment: the service gets
# its settings from ``core.config.to_env`` and nothing else.
_SERVICE_ENV_PREFIXES = (
    "INTERACTION_SUMMARY_",
    "KAFKA_BOOTSTRAP_SERVERS",
    "DATABASE_URL",
    "REDIS_URL",
)


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


class Process:
    """One child process: its command, where it logs, and how it is asked to stop.

    Started in its own session (Ctrl-C in a terminal reaches only the parent, which then stops
    the children in order) with stdout and stderr appended to ``log_path``; each start writes
    a ``===== start #N`` line first, so a log can be read from the latest start on.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        url: str = "",
        stop_signal: signal.Signals = signal.SIGTERM,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.url = url
        self.stop_signal = stop_signal
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Process:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.starts += 1
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(  # noqa: S603 - argv is built by our own callers
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                user=self.user,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.stop_signal),
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
        """``stop_signal`` (a clean shutdown), SIGKILL after ``timeout``; returns the exit code."""
        return self._signal(self.stop_signal, timeout)

    def kill(self) -> int | None:
        """SIGKILL: the process gets no chance to commit, flush or clean up (a crash)."""
        return self._signal(signal.SIGKILL, 10.0)

    def restart(self, *, kill: bool = False) -> Process:
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
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def logs_since_start(self) -> str:
        """The log written since the latest start."""
        return self.logs().rsplit("===== start #", 1)[-1]


def cli_argv(*args: str) -> list[str]:
    """The ``interaction-summary`` CLI run by this interpreter."""
    return [sys.executable, "-m", "cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus every service setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """What a worker, API or producer child runs with: ``clean_env`` plus the settings of
    ``settings`` (``core.config.to_env``) and ``extra``."""
    return clean_env(**{**to_env(settings), **extra})


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies.

    Children must not outlive a test session or an ``up`` that was killed with SIGKILL.
    Runs after the child switched user, so the setting survives the credential change.
    """

    def set_parent_death_signal() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(sig))  # PR_SET_PDEATHSIG

    return set_parent_death_signal


def wait_ready(process: Process, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until it holds; fail early, with the log, if the process exits."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not process.running:
            raise ServerStartError(
                f"{process.name} exited with code {process.returncode} while starting;"
                f" log {process.log_path}:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            process.stop()
            raise ServerStartError(
                f"{process.name} not ready after {timeout:.0f}s; log {process.log_path}:\n"
                f"{process.log_tail()}"
            )
        time.sleep(0.05)


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = HOST) -> int:
    """``preferred`` when nothing listens on it, else a port the kernel picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def tcp_accepts(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def answers_health(base_url: str) -> bool:
    """Whether the API at ``base_url`` answers ``GET /health`` with 200."""
    try:
        return httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
