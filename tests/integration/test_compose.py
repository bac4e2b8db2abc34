"""docker-compose.yml, the Dockerfile and the tables of the README and docs/operations.md, checked without a Docker engine.

What can break unnoticed without one: a service missing or misnamed, a dependency that does
not wait for health, a command the CLI does not have, a health check on the wrong port, a
package the image forgets to copy, a setting the README forgets or documents wrongly.
"""

from __future__ import annotations

import os
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
ONE_SHOT = {"migrate"}
API_ROLE = "interaction_summary_api"


def interpolated(text: str) -> str:
    """The file as compose sees it with every variable set: ``${NAME...}`` -> ``NAME-value``
    (a ``?`` left in a URL would otherwise start its query string)."""
    return re.sub(r"\$\{([A-Z_]+)[^}]*\}", lambda m: f"{m.group(1)}-value", text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    text = interpolated((ROOT / "docker-compose.yml").read_text())
    loaded: dict[str, Any] = yaml.safe_load(text)
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


def test_compose_has_kafka_postgres_redis_migrate_worker_and_api(services: dict[str, Any]) -> None:
    assert set(services) == SERVERS | APPS | ONE_SHOT


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
def test_apps_start_only_after_every_server_is_healthy_and_migrate_succeeded(
    services: dict[str, Any], name: str
) -> None:
    depends = services[name]["depends_on"]
    assert set(depends) == SERVERS | ONE_SHOT
    assert {depends[s]["condition"] for s in SERVERS} == {"service_healthy"}
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_runs_once_and_grants_the_api_role(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert cli_args(migrate)[:3] == ["migrate", "--api-role", API_ROLE]
    assert set(migrate["depends_on"]) == {"postgres"}
    # the role is created on the postgres container's first start, with its own password
    init = (ROOT / "deploy" / "postgres-init.sh").read_text()
    assert f"CREATE ROLE {API_ROLE} LOGIN PASSWORD :'api_password'" in init
    assert any(
        "postgres-init.sh:/docker-entrypoint-initdb.d/" in v
        for v in services["postgres"]["volumes"]
    )


@pytest.mark.parametrize("name", sorted(APPS | ONE_SHOT))
def test_apps_reach_the_servers_by_their_service_names(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] == "kafka"
    assert urlsplit(env["DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"
    database = urlsplit(env["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    # the API runs as its own least-privileged role; the worker and migrate as the owner
    want = API_ROLE if name == "api" else postgres["POSTGRES_USER"]
    assert database.username == want
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
    assert f"127.0.0.1:{api_port}:{api_port}" in services["api"]["ports"]
    metrics_port = services["worker"]["environment"]["INTERACTION_SUMMARY_WORKER_METRICS_PORT"]
    assert f"127.0.0.1:{metrics_port}/metrics" in " ".join(
        services["worker"]["healthcheck"]["test"]
    )
    assert option(cli_args(services["api"]), "--host") == "0.0.0.0"


# --- closed by default ---------------------------------------------------------------------

COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()


@pytest.mark.parametrize("name", sorted(SERVERS | APPS | ONE_SHOT))
def test_no_port_is_published_beyond_loopback(services: dict[str, Any], name: str) -> None:
    for mapping in services[name].get("ports", []):
        text = str(mapping)
        # "HOST_IP:HOST_PORT:CONTAINER_PORT" with HOST_IP loopback; a bare "8000:8000" or
        # "8000" publishes on every interface.
        assert text.startswith("127.0.0.1:") and text.count(":") == 2, f"{name}: {text}"


def test_no_password_has_a_default_and_each_is_required() -> None:
    variables = re.findall(r"\$\{([A-Z_]+)(:?[-?][^}]*)?\}", COMPOSE_TEXT)
    secrets = {(n, rule) for n, rule in variables if "PASSWORD" in n or "SECRET" in n}
    assert {n for n, _ in secrets} == {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "API_DB_PASSWORD"}
    for name, rule in secrets:
        assert rule.startswith(":?"), f"${{{name}}} must be required (:?), not {rule!r}"


def test_redis_requires_its_password_and_every_client_sends_it(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == "REDIS_PASSWORD-value"
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name in APPS | ONE_SHOT:
        url = urlsplit(services[name]["environment"]["REDIS_URL"])
        assert url.password == "REDIS_PASSWORD-value", name


def test_the_worker_metrics_stay_on_loopback(services: dict[str, Any]) -> None:
    env = services["worker"]["environment"]
    assert "INTERACTION_SUMMARY_WORKER_METRICS_HOST" not in env  # the default, 127.0.0.1
    assert Settings.model_fields["worker_metrics_host"].default == "127.0.0.1"
    assert "ports" not in services["worker"]


def test_docker_compose_accepts_the_file_and_refuses_it_without_passwords(tmp_path: Path) -> None:
    """Debian's docker-compose validates the file without an engine (CI installs it)."""
    import shutil
    import subprocess

    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    passwords = {"POSTGRES_PASSWORD": "p", "REDIS_PASSWORD": "r", "API_DB_PASSWORD": "a"}
    no_env_file = tmp_path / "empty.env"  # a developer's .env must not fill the gaps
    no_env_file.write_text("")
    clean = {k: v for k, v in os.environ.items() if k not in passwords}
    ok = subprocess.run(
        ["docker-compose", "--env-file", str(no_env_file), "config", "-q"], cwd=ROOT,
        env={**clean, **passwords},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        ["docker-compose", "--env-file", str(no_env_file), "config", "-q"], cwd=ROOT, env=clean,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missing.returncode != 0 and "PASSWORD" in missing.stderr


def test_every_service_the_operations_guide_lists_is_in_compose(services: dict[str, Any]) -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
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


def _security_section() -> str:
    guide = (ROOT / "docs" / "operations.md").read_text()
    return guide.split("## Security", 1)[1].split("\n## ", 1)[0]


def test_the_operations_guide_shows_the_grants_migrate_applies() -> None:
    from core.roles import api_grants

    section = _security_section()
    block = section.split("```sql\n", 1)[1].split("```", 1)[0]
    shown = [line.rstrip(";") for line in block.splitlines() if line.startswith("GRANT")]
    assert shown == api_grants("interaction_summary_api")


def test_the_operations_guide_has_a_json_sample_of_each_log_kind() -> None:
    import orjson

    blocks = _security_section().split("### Logs", 1)[1].split("```json\n")[1:]
    records = [orjson.loads(line) for b in blocks for line in b.split("```", 1)[0].splitlines()]
    assert {r["logger"] for r in records} >= {"api.access", "audit", "streams.pipeline", "api.main"}
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
