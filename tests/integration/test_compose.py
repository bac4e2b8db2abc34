"""docker-compose.yml, the Dockerfile and the README's tables, checked without a Docker engine.

What can break unnoticed without one: a service missing or misnamed, a dependency that does
not wait for health, a command the CLI does not have, a health check on the wrong port, a
package the image forgets to copy, a setting the README forgets or documents wrongly.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app as cli_app
from core.config import Settings
from tests.support import API_COMMAND, WORKER_COMMAND

ROOT = Path(__file__).resolve().parents[2]
SERVERS = {"kafka", "postgres", "redis"}
APPS = {"worker", "api"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def cli_args(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert argv[0] == "interaction-summary", f"{argv} does not run the CLI"
    return argv[1:]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_compose_has_kafka_postgres_redis_worker_and_api(services: dict[str, Any]) -> None:
    assert set(services) == SERVERS | APPS


def test_kafka_is_apache_kafka_in_kraft_mode_with_one_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


@pytest.mark.parametrize("name", sorted(SERVERS | APPS))
def test_every_service_has_a_health_check(services: dict[str, Any], name: str) -> None:
    check = services[name]["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) > 1
    assert {"interval", "timeout", "retries"} <= set(check)


@pytest.mark.parametrize("name", sorted(APPS))
def test_apps_start_only_after_every_server_is_healthy(services: dict[str, Any], name: str) -> None:
    depends = services[name]["depends_on"]
    assert set(depends) == SERVERS
    assert {d["condition"] for d in depends.values()} == {"service_healthy"}


@pytest.mark.parametrize("name", sorted(APPS))
def test_apps_reach_the_servers_by_their_service_names(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] == "kafka"
    assert urlsplit(env["DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"
    database = urlsplit(env["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]


def test_worker_and_api_run_the_cli_commands_the_tests_run(services: dict[str, Any]) -> None:
    assert cli_args(services["worker"])[: len(WORKER_COMMAND)] == list(WORKER_COMMAND)
    assert cli_args(services["api"])[: len(API_COMMAND)] == list(API_COMMAND)


@pytest.mark.parametrize("name", sorted(APPS))
def test_service_commands_are_accepted_by_the_cli(services: dict[str, Any], name: str) -> None:
    # --help stops before running, but only after every option name was parsed.
    result = CliRunner().invoke(cli_app, [*cli_args(services[name]), "--help"])
    assert result.exit_code == 0, result.output


def test_health_checks_probe_the_ports_the_apps_listen_on(services: dict[str, Any]) -> None:
    api_port = option(cli_args(services["api"]), "--port")
    assert f"127.0.0.1:{api_port}/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert f"{api_port}:{api_port}" in services["api"]["ports"]
    metrics_port = services["worker"]["environment"]["INTERACTION_SUMMARY_WORKER_METRICS_PORT"]
    assert f"127.0.0.1:{metrics_port}/metrics" in " ".join(
        services["worker"]["healthcheck"]["test"]
    )
    assert option(cli_args(services["api"]), "--host") == "0.0.0.0"


def test_every_service_the_readme_lists_is_in_compose(services: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.MULTILINE))
    assert listed == set(services)


def test_the_image_holds_every_package_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, flags=re.MULTILINE))
    assert packages <= copied
    assert dockerfile.startswith("#") and "FROM python:3.11" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)
    assert cmd is not None
    argv = yaml.safe_load(cmd.group(1))
    assert argv[0] == "interaction-summary"
    assert CliRunner().invoke(cli_app, [*argv[1:], "--help"]).exit_code == 0


def test_readme_documents_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = dict(re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|", section, flags=re.MULTILINE))
    expected = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = alias.choices[0] if alias is not None else f"INTERACTION_SUMMARY_{name.upper()}"  # type: ignore[union-attr]
        expected[variable] = str(field.default)
    assert documented == expected
