"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema
(tests/data/compose-spec.json, vendored unchanged from
``compose/config/compose_spec.json`` in the docker-compose 1.29.2 wheel on
PyPI, Apache License 2.0; that copy dates from 2021). Every service command
that runs this project's image is parsed by the real ``rewardpilot`` click
command, so an unknown option or a value of the wrong type fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex

import jsonschema
import pytest
import tomllib
import typer
import typer.main
import yaml

from rewardpilot.cli.main import app as cli_app

from conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
TEST_ENVIRONMENT = {"ORCHESTRATOR_API_KEY": "test-key"}
# The schema names draft 2019-09 by an http:// URI that jsonschema does not
# recognise, so the validator class is given rather than looked up.
SCHEMA_DRAFT = jsonschema.Draft201909Validator


def interpolate(text: str, environment: dict[str, str]) -> str:
    """Substitute ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` like Compose does."""
    def replace(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = environment.get(name)
        if value:
            return value
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise ValueError(f"required variable {name} is not set: {arg}")
        return ""
    return VARIABLE.sub(replace, text)


def interpolate_values(node, environment: dict[str, str]):
    """Interpolate every string value after parsing, as Compose does."""
    if isinstance(node, dict):
        return {key: interpolate_values(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_values(value, environment) for value in node]
    if isinstance(node, str):
        return interpolate(node, environment)
    return node


def load_compose(environment: dict[str, str] = TEST_ENVIRONMENT) -> dict:
    return interpolate_values(yaml.safe_load(COMPOSE.read_text()), environment)


def unparsed(context: typer.Context) -> list[str]:
    """Return the arguments a group left for its subcommand (click 8.2 renamed ``protected_args``)."""
    protected = getattr(context, "_protected_args", None)
    if protected is None:
        protected = context.protected_args
    return [*protected, *context.args]


def parse_cli(arguments: list[str]) -> typer.Context:
    """Parse ``rewardpilot ARGUMENTS`` with the real CLI without running the command."""
    group = typer.main.get_command(cli_app)
    root = group.make_context("rewardpilot", list(arguments))
    name, command, rest = group.resolve_command(root, unparsed(root))
    if hasattr(command, "resolve_command"):
        root = command.make_context(name, rest, parent=root)
        name, command, rest = command.resolve_command(root, unparsed(root))
    return command.make_context(name, rest, parent=root)


def project_services(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items() if "build" in service}


def test_compose_matches_schema():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(load_compose(), schema, cls=SCHEMA_DRAFT)


def test_schema_rejects_bad_compose():
    schema = json.loads(SCHEMA.read_text())
    compose = load_compose()
    compose["services"]["consumer"]["deploy"]["replicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, schema, cls=SCHEMA_DRAFT)


def test_compose_requires_api_key():
    with pytest.raises(ValueError, match="ORCHESTRATOR_API_KEY"):
        load_compose({})


def test_compose_services_and_settings():
    services = load_compose()["services"]
    assert set(services) == {"redis", "orchestrator", "consumer", "producer"}

    redis_service = services["redis"]
    assert redis_service["image"].startswith("redis:7")
    assert "--appendonly" in redis_service["command"]
    assert redis_service["command"][redis_service["command"].index("--appendonly") + 1] == "yes"
    assert redis_service["volumes"][0].startswith("redis-data:")
    assert "redis-data" in load_compose()["volumes"]
    assert "redis-cli" in redis_service["healthcheck"]["test"]

    assert services["consumer"]["deploy"]["replicas"] == 3
    assert services["producer"]["restart"] == "no"
    assert "/health" in " ".join(services["orchestrator"]["healthcheck"]["test"])
    for name, service in project_services(load_compose()).items():
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0", name
        assert service["environment"]["ORCHESTRATOR_API_KEY"] == "test-key", name


def test_compose_commands_parse_with_cli():
    services = project_services(load_compose())
    assert set(services) == {"orchestrator", "consumer", "producer"}
    for name, service in services.items():
        context = parse_cli(service["command"])
        assert context.command.name == service["command"][0], name

    consumer = parse_cli(services["consumer"]["command"])
    assert consumer.params["orchestrator"] == "http://orchestrator:8080"
    assert consumer.params["rate"] == "50/s"
    orchestrator = parse_cli(services["orchestrator"]["command"])
    assert orchestrator.params["host"] == "0.0.0.0"
    assert orchestrator.params["port"] == 8080


@pytest.mark.parametrize(
    "arguments",
    [
        ["consume", "--no-such-option"],
        ["orchestrator", "--port", "eighty"],
        ["no-such-command"],
    ],
)
def test_cli_check_rejects_bad_command(arguments):
    with pytest.raises(typer.TyperException):
        parse_cli(arguments)


def test_producer_publishes_existing_file():
    command = load_compose()["services"]["producer"]["command"]
    assert (ROOT / command[1]).is_file()


def dockerfile_instructions() -> list[tuple[str, str]]:
    instructions = []
    for line in DOCKERFILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_builds_the_cli():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")

    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")

    entrypoint = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint[-1]) == ["rewardpilot"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "rewardpilot" in scripts


def test_dockerfile_copies_existing_paths():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY":
            continue
        *sources, _target = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert source not in ignored, f"COPY source {source} is excluded by .dockerignore"


def test_interpolate_defaults_and_values():
    assert interpolate("${A:-x}/${B}", {"B": "y"}) == "x/y"
    assert interpolate("${A:-x}", {"A": "z"}) == "z"
    assert os.path.basename(interpolate("${HOME_DIR:-/tmp}/a", {})) == "a"
