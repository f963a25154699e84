"""The deployment files (compose.yaml, Dockerfile, .env.example, .dockerignore) against the real code.

No Docker daemon is needed: compose.yaml is read with PyYAML (merge keys resolved) and its ``${VAR}``
references are interpolated here as Compose does. Every ``medvlm`` command line in compose.yaml and
the Dockerfile is parsed by the real command-line parser (``app.cli.build_parser``), every
``MEDVLM_*`` variable must be one the code reads, and no secret may be written in compose.yaml.
``docker compose config`` also runs when a Docker CLI with the compose plugin is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SOURCE_PACKAGES = ("app", "medvlm", "data_prep", "knowledge_graph", "training")
# What a site fills in (.env); the tests interpolate compose.yaml with these placeholders.
FILLED = {"MEDVLM_PSEUDONYM_KEY": "placeholder-site-key", "POSTGRES_PASSWORD": "placeholder-password"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$|API_KEY|PASSWD|CREDENTIAL", re.IGNORECASE)
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
ONLY_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}")


# -- reading the files as Compose and Docker do -------------------------------------------------


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ``${V}``, ``${V:-default}``, ``${V-dflt}``, ``${V:?err}``, ``$$``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        current = env.get(name)
        missing = not current if op.startswith(":") else current is None
        if not missing:
            return str(current)
        if op.endswith("?"):
            raise KeyError(f"compose.yaml requires {name}: {arg}")
        return arg if op.endswith("-") else ""

    return VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def env_example(*, uncomment: bool = False) -> dict[str, str]:
    """The variables .env.example sets (with ``uncomment``, also its commented-out ``# NAME=value`` lines)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if uncomment and re.match(r"#\s*[A-Z_][A-Z0-9_]*=", line):
            line = line.lstrip("#").strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as Compose sees it with ``env`` (default: .env.example as shipped, filled in)."""
    loaded = interpolate(raw_compose(), {**env_example(), **FILLED} if env is None else env)
    assert isinstance(loaded, dict)
    return loaded


def gpu_env() -> dict[str, str]:
    return {**env_example(uncomment=True), **FILLED, "MEDVLM_API_KEY": "placeholder-api-key"}


def argv_of(command: str | list[str]) -> list[list[str]]:
    """The ``medvlm`` command lines in a Compose ``command`` (a list, a string, or ``sh -c "a && b"``)."""
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if words[:2] == ["sh", "-c"]:
        return [line for part in re.split(r"&&|\|\||;", words[2]) for line in argv_of(part.strip())]
    return [words] if words and words[0] == "medvlm" else []


def compose_command_lines(config: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    for name, service in config["services"].items():
        if "command" in service and "entrypoint" not in service:
            for argv in argv_of(service["command"]):
                yield name, argv


def dockerfile_command_lines() -> list[list[str]]:
    """``CMD``/``ENTRYPOINT`` JSON arrays and ``medvlm ...`` calls inside ``RUN`` lines."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines: list[list[str]] = []
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction in ("CMD", "ENTRYPOINT") and rest.strip().startswith("["):
            lines.append(json.loads(rest))
        elif instruction == "RUN":
            # the executable in command position, bare or as .../bin/medvlm (not a user or folder name)
            for match in re.finditer(r"(?:^|&&|\|\||;|\|)\s*(?:\S*/bin/)?(medvlm(?=\s|$)[^;&|>]*)", rest):
                lines.append(shlex.split(match.group(1)))
    return [argv for argv in lines if argv and Path(argv[0]).name == "medvlm"]


def parse_medvlm(argv: list[str]) -> Any:
    """Parse with the real parser; a wrong command or flag fails the test, naming the line."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"`{shlex.join(argv)}` is not a valid medvlm command line (argparse exit {e.code})")
    func = getattr(args, "func", None)
    assert func is not None and func.__name__ != "<lambda>", f"`{shlex.join(argv)}` names no action"
    return args


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


# -- services, profiles, volumes, health --------------------------------------------------------


def test_services_and_profiles() -> None:
    services = compose()["services"]
    assert {"app", "db", "vllm"} <= set(services)
    assert services["vllm"]["profiles"] == ["gpu"]
    assert [name for name, s in services.items() if s.get("profiles")] == ["vllm"]  # the rest always run
    app = services["app"]
    assert (
        app["build"]["dockerfile"] == "Dockerfile"
        and (ROOT / app["build"]["context"] / "Dockerfile").is_file()
    )
    assert services["db"]["image"] == "postgres:15"
    assert services["vllm"]["image"].startswith("vllm/vllm-openai:")


def test_database_service_volume_healthcheck_and_url() -> None:
    config = compose()
    db, app = config["services"]["db"], config["services"]["app"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert {"interval", "timeout", "retries"} <= set(db["healthcheck"])
    volume, target = db["volumes"][0].split(":")[:2]
    assert volume in config["volumes"] and target == "/var/lib/postgresql/data"  # a named volume

    url = make_url(environment(app)["MEDVLM_DATABASE_URL"])
    assert url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg"
    assert url.host == "db" and url.password is None  # the password comes from PGPASSWORD, not the URL
    assert url.database == environment(db)["POSTGRES_DB"] and url.username == environment(db)["POSTGRES_USER"]
    assert (
        environment(app)["PGPASSWORD"] == environment(db)["POSTGRES_PASSWORD"] == FILLED["POSTGRES_PASSWORD"]
    )
    assert app["depends_on"]["db"]["condition"] == "service_healthy"  # the app waits for the database
    for one_shot in ("db-init", "prepare"):
        assert app["depends_on"][one_shot]["condition"] == "service_completed_successfully"
    assert config["services"]["db-init"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_medvlm_home_is_a_volume_everywhere() -> None:
    config = compose()
    home = re.search(r"MEDVLM_HOME=(\S+)", DOCKERFILE.read_text())
    assert home is not None
    for name in ("app", "db-init", "prepare"):
        service = config["services"][name]
        assert environment(service)["MEDVLM_HOME"] == home.group(1)
        mounts = dict(v.split(":")[1::-1] for v in service["volumes"])  # target -> source
        assert mounts[home.group(1)] in config["volumes"], name


def test_app_is_published_on_loopback_and_isolated_networks() -> None:
    config = compose()
    app = config["services"]["app"]
    assert app["ports"] == ["127.0.0.1:7860:7860"]
    assert config["networks"]["backend"]["internal"] is True
    for name in ("db", "vllm"):
        assert config["services"][name]["networks"] == ["backend"] and "ports" not in config["services"][name]
    assert "healthcheck" in app and "healthcheck" in config["services"]["vllm"]


def test_gpu_profile_serves_a_read_only_model_and_the_app_uses_it() -> None:
    config = compose(gpu_env())
    vllm, app = config["services"]["vllm"], config["services"]["app"]
    command = [str(word) for word in vllm["command"]]
    name = command[command.index("--served-model-name") + 1]
    assert name == gpu_env()["SERVED_MODEL_NAME"]
    model_dir = command[0]
    mounts = [v for v in vllm["volumes"] if v.split(":")[1] == model_dir]
    assert len(mounts) == 1 and mounts[0].endswith(":ro")
    assert environment(vllm)["VLLM_NO_USAGE_STATS"] == "1" and environment(vllm)["HF_HUB_OFFLINE"] == "1"
    assert environment(vllm)["VLLM_LOGGING_LEVEL"] == "WARNING"  # no request lines quoting prompts
    assert environment(vllm)["VLLM_API_KEY"] == environment(app)["MEDVLM_API_KEY"] != ""
    [argv] = argv_of(app["command"])
    server = parse_medvlm(argv).server
    assert server == f"http://vllm:{command[command.index('--port') + 1]}"
    assert app["depends_on"]["vllm"] == {"condition": "service_healthy", "required": False}
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


# -- the command lines against the real parser --------------------------------------------------


def test_every_medvlm_command_line_exists_in_the_cli() -> None:
    seen: dict[str, list[str]] = {}
    for env in ({**env_example(), **FILLED}, gpu_env()):
        for service, argv in compose_command_lines(compose(env)):
            parse_medvlm(argv)
            seen[f"{service}: {shlex.join(argv)}"] = argv
    docker_lines = dockerfile_command_lines()
    for argv in docker_lines:
        parse_medvlm(argv)
    commands = {tuple(argv[1:3]) for argv in seen.values()} | {tuple(argv[1:3]) for argv in docker_lines}
    assert {("db", "init"), ("builtin", "prepare"), ("kg", "build"), ("app", "--host")} <= commands, commands
    assert ("builtin", "info") in {tuple(argv[1:3]) for argv in docker_lines}  # the build's smoke check
    cpu = [argv for key, argv in seen.items() if key.startswith("app:") and "--server" not in argv]
    assert cpu and all(argv[argv.index("--host") + 1] == "0.0.0.0" for argv in cpu)


def test_the_parser_check_catches_a_wrong_flag() -> None:
    with pytest.raises(pytest.fail.Exception, match="not a valid medvlm command line"):
        parse_medvlm(["medvlm", "app", "--bind", "0.0.0.0"])
    with pytest.raises(AssertionError, match="names no action"):
        parse_medvlm(["medvlm", "db"])


def test_medvlm_variables_are_ones_the_code_reads() -> None:
    code = "\n".join(
        path.read_text() for package in SOURCE_PACKAGES for path in (ROOT / package).rglob("*.py")
    )
    used = set()
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE):
        used |= set(re.findall(r"\bMEDVLM_[A-Z_]+\b", path.read_text()))
    assert used >= {"MEDVLM_HOME", "MEDVLM_DATABASE_URL", "MEDVLM_PSEUDONYM_KEY", "MEDVLM_API_KEY"}
    unknown = sorted(name for name in used if f'"{name}"' not in code and f"${name}" not in code)
    assert not unknown, f"not read by medvlm: {unknown}"


# -- no secrets -----------------------------------------------------------------------------------


def secret_literals(config: Any, path: str = "") -> list[str]:
    """Places in a raw (not interpolated) compose document where a secret is written out."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if (
                SECRET_NAME.search(str(key))
                and isinstance(value, str | int)
                and not ONLY_VARIABLE.fullmatch(str(value))
            ):
                found.append(where)
            found += secret_literals(value, where)
    elif isinstance(config, list):
        for index, item in enumerate(config):
            found += secret_literals(item, f"{path}[{index}]")
    elif isinstance(config, str):
        if re.search(r"://[^/\s:@]+:[^@\s]+@", config):  # a password in a URL
            found.append(path)
        name, equals, value = config.partition("=")  # the KEY=value list form
        if equals and SECRET_NAME.search(name) and not ONLY_VARIABLE.fullmatch(value):
            found.append(path)
        for token in re.findall(r"[A-Za-z0-9+/_=-]{24,}", config):  # a long random-looking token
            if re.search(r"\d", token) and re.search(r"[A-Za-z]", token) and not token.startswith("-"):
                found.append(path)
    return found


def test_no_secret_is_written_in_compose() -> None:
    assert secret_literals(raw_compose()) == []
    for value in (raw_compose()["x-medvlm"]["environment"], raw_compose()["services"]["db"]["environment"]):
        assert all(ONLY_VARIABLE.fullmatch(v) for k, v in value.items() if SECRET_NAME.search(k))


@pytest.mark.parametrize(
    "planted",
    [
        {"POSTGRES_PASSWORD": "hunter2-correct-horse"},
        {"MEDVLM_DATABASE_URL": "postgresql+psycopg://medvlm:pw@db:5432/medvlm"},
        {"NOTE": "token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"},
    ],
)
def test_the_secret_check_finds_a_planted_secret(planted: dict[str, str]) -> None:
    config = raw_compose()
    config["services"]["app"] = {**config["services"]["app"], "environment": planted}
    assert secret_literals(config)


def test_env_example_leaves_every_secret_empty_and_is_not_built_in() -> None:
    values = env_example(uncomment=True)
    secrets = {name: value for name, value in values.items() if SECRET_NAME.search(name)}
    assert {"MEDVLM_PSEUDONYM_KEY", "POSTGRES_PASSWORD", "MEDVLM_API_KEY"} <= set(secrets)
    assert all(value == "" for value in secrets.values()), secrets
    required = {m["name"] for m in VARIABLE.finditer(COMPOSE.read_text()) if (m["op"] or "").endswith("?")}
    assert required <= set(values)  # every variable compose.yaml insists on is explained there
    with pytest.raises(KeyError, match="MEDVLM_PSEUDONYM_KEY"):
        compose({**env_example(), "POSTGRES_PASSWORD": "x"})
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", ".venv", "runs"} <= set(ignored)


# -- the Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_base_pins_and_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["python:3.11-slim", "python:3.11-slim"]
    assert "torch==2.13.0" in text and re.search(r"torch(?!==2\.13\.0)[=<>~]", text) is None
    assert "--no-index --find-links wheelhouse" in text  # offline build from a wheelhouse
    nodeps = re.search(r'ARG NODEPS="([^"]+)"', text)
    makefile = re.search(r"^NODEPS := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert nodeps and makefile and nodeps.group(1).split() == makefile.group(1).split()
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_docs_warn_about_the_open_bind() -> None:
    deployment = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    assert "reverse proxy" in deployment and "0.0.0.0" in deployment
    assert "docs/DEPLOYMENT.md" in (ROOT / "README.md").read_text()


# -- Compose itself, when it is installed ---------------------------------------------------------


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _docker_compose()
    if command is None:
        pytest.skip("no docker CLI with the compose plugin here; the checks above parse compose.yaml instead")
    env = {**os.environ, **gpu_env()}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "gpu", "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["services"]) == set(compose(gpu_env())["services"])
