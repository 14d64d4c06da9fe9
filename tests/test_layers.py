"""The layers of the architecture, checked over the import graph of the source (every import statement, also
those inside functions and under TYPE_CHECKING, since each one is a dependency a reader has to follow).

    models/      the model runtime: imports nothing from genq, api or workers
    genq/        the service core: imports nothing from api or workers, except the command line (genq/cli/,
                 genq/__main__.py), which wires the processes; nothing else in genq imports the command line;
                 the migrations runner (genq.store.migrate) finds the migrations package
    api/         the Flask app: never imports workers
    workers/     the Celery workers: never import api
    migrations/  Alembic: the schema's history, written out; imports only the persistence layer (genq.store)
    genq/webhooks/ signing, URL rules, retry, transport, delivery and events: no database code (the outbox,
                 dispatch, delivery runner and secret store are the webhook modules that use the database)
    genq/client/ the HTTP client of the API: imports nothing of the project but itself, and none of the
                 service's libraries (it runs in users' programs; genq.cli uses it, never the other way)

Inside genq, from the bottom up:
    genq.ids, genq.status, genq.lifecycle   the vocabulary: import nothing of the project
    genq.store    the persistence layer: the vocabulary and the migrations package only, except that a status
                  change creates the webhook outbox rows it fires in its own transaction
                  (genq.store.transition_effects -> genq.webhooks.outbox)
    the rest      settings, broker, catalog, serialize, submit, sweeper, genq.webhooks: on the layers below

and no module imports itself back through others (no import cycle).
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genq", "api", "workers", "models", "migrations")
COMMAND_LINE = ("genq.cli", "genq.__main__")
# the genq.webhooks modules that use the database; the others are the package's database-free part
WEBHOOK_STORAGE = ("genq.webhooks.outbox", "genq.webhooks.dispatch", "genq.webhooks.delivery_runner",
                   "genq.webhooks.secret_store")
DATABASE_LIBRARIES = ("sqlalchemy", "psycopg", "alembic", "genq.store")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _parse(path: Path) -> ast.Module:
    """`ast.parse` in a thread of its own: in a long test process CPython 3.11 can raise "SystemError: AST
    constructor recursion depth mismatch" in a thread whose recursion count an earlier test left off; a new
    thread starts with its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ast.parse, path.read_text(encoding="utf-8"), str(path)).result()


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import in the file: project modules resolved to the module itself
    (`from genq.store import jobs` is genq.store.jobs), anything else as written."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _ in _imported(module, path):
            target = _project_module(name)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def _project_module(name: str) -> str | None:
    """The project module `name` is, or lies in (an attribute path such as genq.store.jobs.JobStore)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _within(name: str, prefixes: tuple[str, ...] | str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ((prefixes,) if isinstance(prefixes, str) else prefixes))


def _violations(allowed: dict[str, tuple[str, ...]], exempt: tuple[str, ...] = ()) -> list[str]:
    """Imports of project packages that the importing module's rule does not allow: `allowed` maps a package
    to the packages its modules may import; modules within `exempt` are not checked."""
    out = []
    for module, path in MODULES.items():
        rule = next((p for importer, p in allowed.items() if _within(module, importer)), None)
        if rule is None or _within(module, exempt):
            continue
        for name, line in _imported(module, path):
            if name.split(".")[0] in PACKAGES and not _within(name, rule):
                out.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    return out


def test_the_source_tree_was_found() -> None:
    assert {"genq.store.jobs", "api", "workers.celery_app", "models.engine.engine", "migrations.env"} <= set(MODULES)


def test_models_import_nothing_from_the_service() -> None:
    assert _violations({"models": ("models",)}) == []


def test_the_core_imports_neither_the_api_nor_the_workers_except_the_command_line() -> None:
    # the migrations runner finds the migration scripts by their package
    assert _violations({"genq.store.migrate": ("genq", "migrations"), "genq": ("genq", "models")},
                       exempt=COMMAND_LINE) == []


def test_only_the_command_line_imports_the_command_line() -> None:
    users = [f"{m} imports {t}" for m, targets in _graph().items() for t in targets
             if _within(t, COMMAND_LINE) and not _within(m, COMMAND_LINE)]
    assert users == []


def test_the_api_and_the_workers_never_import_each_other() -> None:
    assert _violations({"api": ("api", "genq", "models"), "workers": ("workers", "genq", "models")}) == []


VOCABULARY = ("genq.ids", "genq.status", "genq.lifecycle")


def test_the_vocabulary_imports_nothing_of_the_project() -> None:
    assert _violations({v: () for v in VOCABULARY}) == []


def test_the_persistence_layer_imports_only_the_vocabulary_and_the_outbox_its_transitions_fill() -> None:
    assert _violations({
        "genq.store.transition_effects": ("genq.store", *VOCABULARY, "genq.webhooks.outbox"),
        "genq.store.migrate": ("genq.store", "migrations"),
        "genq.store": ("genq.store", *VOCABULARY),
    }) == []


def test_migrations_import_only_the_persistence_layer() -> None:
    assert _violations({"migrations": ("migrations", "genq.store")}) == []


def test_the_database_free_webhook_modules_use_no_database() -> None:
    free = [m for m in MODULES if _within(m, "genq.webhooks") and not _within(m, WEBHOOK_STORAGE)]
    found = [f"{m} imports {name}" for m in free for name, _ in _imported(m, MODULES[m])
             if _within(name, DATABASE_LIBRARIES) or _within(_project_module(name) or "", WEBHOOK_STORAGE)]
    assert found == []


CLIENT = "genq.client"
SERVICE_LIBRARIES = ("flask", "werkzeug", "sqlalchemy", "psycopg", "alembic", "celery", "kombu", "redis", "torch",
                     "models", "api", "workers", "migrations")


def test_the_client_library_imports_nothing_of_the_service() -> None:
    assert _violations({CLIENT: (CLIENT,)}) == []
    found = [f"{m} imports {name}" for m in MODULES if _within(m, CLIENT) for name, _ in _imported(m, MODULES[m])
             if _within(name, SERVICE_LIBRARIES)]
    assert found == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_there_is_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_check_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected
