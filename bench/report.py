"""What every benchmark reports: figures against ceilings, a rich table, and a JSON file.

A figure is one measured number, optionally with the ceiling it is judged against (measured
in the same run, on the same machine) and targets on the value or on value/ceiling. The JSON
written to ``bench/results/<name>.json`` carries the figures, the parameters, the command line
and what the machine was, so a number in docs/performance.md can always be traced to its run.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Smoke runs (CI) write beside the real results, in a folder git ignores.
SMOKE_DIR = RESULTS_DIR / "smoke"

PACKAGES = (
    "faust-streaming",
    "aiokafka",
    "asyncpg",
    "redis",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "orjson",
)

Op = Literal["<", "<=", ">", ">="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Target:
    """``value OP bound`` (of="value") or ``value / ceiling OP bound`` (of="ratio")."""

    op: Op
    bound: float
    of: Literal["value", "ratio"] = "value"

    def holds(self, value: float, ratio: float | None) -> bool | None:
        subject = value if self.of == "value" else ratio
        return None if subject is None else _OPS[self.op](subject, self.bound)

    def describe(self, unit: str) -> str:
        if self.of == "ratio":
            return f"ratio {self.op} {self.bound:g}"
        return f"{self.op} {_number(self.bound)} {unit}".rstrip()


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number, the ceiling it is compared with, and its targets."""

    name: str
    value: float
    unit: str
    ceiling: float | None = None
    ceiling_name: str = ""
    targets: tuple[Target, ...] = ()
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ceiling is None or self.ceiling == 0:
            return None
        return self.value / self.ceiling

    @property
    def met(self) -> bool | None:
        """All targets hold (None when there is no target or one cannot be judged)."""
        if not self.targets:
            return None
        results = [t.holds(self.value, self.ratio) for t in self.targets]
        if any(r is None for r in results):
            return None
        return all(results)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "ceiling": self.ceiling,
            "ceiling_name": self.ceiling_name,
            "ratio": self.ratio,
            "targets": [asdict(t) | {"text": t.describe(self.unit)} for t in self.targets],
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Report:
    """A benchmark run: its figures, parameters and free-form details, written as one JSON."""

    name: str
    smoke: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    servers: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "smoke": self.smoke,
            "command": command_line(),
            "git_commit": git_commit(),
            "started_at": self.started_at,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "servers": self.servers,
            "parameters": self.parameters,
            "figures": [f.as_json() for f in self.figures],
            "details": self.details,
        }

    def write(self, path: Path | None = None) -> Path:
        """Write the JSON (smoke runs under ``results/smoke/``); returns where."""
        if path is None:
            path = (SMOKE_DIR if self.smoke else RESULTS_DIR) / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2, default=str) + "\n")
        return path

    def table(self) -> Table:
        title = f"{self.name}{' (smoke: tiny data, numbers mean nothing)' if self.smoke else ''}"
        table = Table(title=title, title_justify="left")
        for column in ("figure", "value", "ceiling", "ratio", "target", "met?"):
            table.add_column(column, justify="left" if column in ("figure", "target") else "right")
        for f in self.figures:
            ceiling = f"{_number(f.ceiling)} {f.unit}" if f.ceiling is not None else "-"
            if f.ceiling_name and f.ceiling is not None:
                ceiling = f"{ceiling}\n[dim]{f.ceiling_name}[/]"
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f.met]
            table.add_row(
                f.name + (f"\n[dim]{f.note}[/]" if f.note else ""),
                f"{_number(f.value)} {f.unit}",
                ceiling,
                f"{f.ratio:.2f}" if f.ratio is not None else "-",
                ", ".join(t.describe(f.unit) for t in f.targets) or "-",
                met,
            )
        return table

    def show(self, console: Console | None = None, path: Path | None = None) -> None:
        console = console or make_console()
        console.print(self.table())
        if path is not None:
            console.print(f"[dim]written to {path}[/]")


def make_console() -> Console:
    """A console; piped output (CI logs) gets a table wide enough to read, not 80 columns."""
    return Console(width=None if sys.stdout.isatty() else 150)


def _number(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def command_line() -> str:
    module = sys.modules["__main__"].__spec__
    head = f"python -m {module.name}" if module is not None else sys.argv[0]
    return " ".join([head, *sys.argv[1:]])


def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), None outside a checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, Python and the versions of the packages that matter."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu_model": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def peak_rss_mb(pid: int | str = "self") -> float:
    """High-water mark of a process's resident set (Linux ``VmHWM``), in MiB; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on sorted values; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


# --- processes: CPU from /proc -------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str]:
    """``/proc/PID/stat`` after the command name (field 3, the state, comes first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | str = "self", *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 if unknown.

    With ``reaped_children``, plus those of its children that exited and were waited for
    (``cutime``, ``cstime``): a Postgres server's short-lived backends and autovacuum workers.
    """
    try:
        fields = _stat_fields(pid)
    except (OSError, IndexError):
        return 0.0
    # utime, stime, cutime, cstime are fields 14-17 of the stat line.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class _Process:
    ppid: int
    name: str
    cpu: float  # its own and its reaped children's CPU seconds


def _process_table() -> dict[int, _Process]:
    """Every live process: parent, command name (``comm``) and CPU, in one pass over /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
            head, tail = text.rsplit(")", 1)
            fields = tail.split()
            ticks = sum(int(f) for f in fields[11:15])
            table[int(entry.name)] = _Process(int(fields[1]), head.split("(", 1)[1], ticks / tick)
        except (OSError, IndexError, ValueError):
            continue  # exited while we read
    return table


def stack_cpu_seconds(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of process trees (roots and live descendants).

    A member's reaped children count too, so the delta of two samples includes the backends
    a Postgres server forked and reaped in between (a process alive at the first sample that
    exits before the second is counted by its parent's ``cutime``: nothing is lost).
    """
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, process in table.items():
        children.setdefault(process.ppid, []).append(pid)
    totals = {}
    for name, roots in groups.items():
        seen: set[int] = set()
        frontier = [pid for pid in roots if pid in table]
        while frontier:
            pid = frontier.pop()
            if pid not in seen:
                seen.add(pid)
                frontier.extend(children.get(pid, ()))
        totals[name] = sum(table[pid].cpu for pid in seen)
    return totals


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants (live, or exited and reaped)."""
    return stack_cpu_seconds({"tree": [pid]})["tree"]


def pids_named(name: str) -> list[int]:
    """Live processes whose command name (``comm``, at most 15 characters) starts with ``name``."""
    return sorted(pid for pid, p in _process_table().items() if p.name.startswith(name[:15]))


def listening_pids(port: int) -> list[int]:
    """The topmost local processes holding a listening TCP socket on ``port`` (any address).

    Found through /proc/net/tcp{,6} (the socket's inode) and /proc/*/fd: empty when the
    server runs in another PID or network namespace (a container), or we may not look.
    """
    inodes: set[str] = set()
    for sockets in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(sockets).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not inodes:
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        holders.add(int(entry.name))
                        break
    table = _process_table()
    return sorted(pid for pid in holders if table.get(pid, _Process(0, "", 0)).ppid not in holders)
