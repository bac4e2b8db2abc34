"""What every benchmark reports: figures against ceilings, a rich table, and a JSON file.

A figure is one measured number, optionally with the ceiling it is judged against (measured
in the same run, on the same machine) and targets on the value or on value/ceiling. The JSON
written to ``bench/results/<name>.json`` carries the figures, the parameters, the command line
and what the machine was, so a number in the README can always be traced to its run.
"""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import sys
from collections.abc import Callable, Sequence
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


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``); 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of a process and its live descendants (Postgres backends, say)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(cpu_seconds(p) for p in tree)
