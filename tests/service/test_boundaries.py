"""The import boundaries of the architecture: the API never loads torch or the workers; tasks never the API."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from e2e_helpers import ROOT


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_the_api_imports_neither_torch_nor_the_workers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    modules = _modules_after(
        "from api import create_app; app = create_app()",
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "GENQ_BROKER_URL": f"filesystem://{tmp_path / 'b'}"},
    )
    assert "flask" in modules
    assert not {m for m in modules if m == "torch" or m.startswith(("torch.", "workers"))}


def test_the_worker_tasks_never_import_the_flask_app(tmp_path) -> None:  # type: ignore[no-untyped-def]
    modules = _modules_after(
        "import workers.celery_app, workers.job_tasks, workers.job_runner",
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "GENQ_BROKER_URL": f"filesystem://{tmp_path / 'b'}"},
    )
    assert "workers.job_tasks" in modules
    assert not {m for m in modules if m == "flask" or m == "api" or m.startswith(("flask.", "api."))}
