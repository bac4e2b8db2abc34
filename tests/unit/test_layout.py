"""The direction of imports: the product never imports its benchmarks or its tests.

``bench`` and ``tests`` build on the product (``streams``, ``api``, ``core``, ``cli``,
``embedded``); the wheel and the image hold the product alone, so an import the other way
would break an installed service the moment the line runs. Every import statement counts,
also one inside a function (those run late, when nothing else would notice).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("streams", "api", "core", "cli", "embedded")
TOOLING = ("bench", "tests")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, wherever it stands; relative imports
    are left out (they stay inside their package)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def imports_of_tooling(root: Path) -> list[str]:
    """``path:line imports module`` for each import of bench or tests in a product package."""
    problems = []
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path.read_text()):
                if module.split(".")[0] in TOOLING:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module}")
    return problems


def test_no_product_package_imports_bench_or_tests() -> None:
    assert imports_of_tooling(ROOT) == []


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("import bench.report\n", ["bench.report"]),
        ("from tests.support import wait_until\n", ["tests.support"]),
        ("def f():\n    from bench import synthetic\n", ["bench"]),
        ("import benchmark\nfrom testsuite import x\n", []),  # only the packages themselves
        ("from . import bench\n", []),  # relative: inside its own package
    ],
)
def test_the_check_sees_every_form_of_import(
    tmp_path: Path, source: str, caught: list[str]
) -> None:
    """A plant in a product package is reported, at any depth of the code."""
    for package in PRODUCT:
        (tmp_path / package).mkdir()
    (tmp_path / "cli" / "planted.py").write_text(source)
    assert [p.rsplit(" ", 1)[1] for p in imports_of_tooling(tmp_path)] == caught


def test_the_wheel_packages_only_the_product() -> None:
    """setuptools' package list names the product packages and nothing of bench or tests."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(name.rstrip("*") for name in include) == sorted(PRODUCT)


def test_the_image_copies_only_the_product() -> None:
    copied = [
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and not line.startswith("COPY pyproject")
    ]
    assert sorted(copied) == sorted(PRODUCT)
