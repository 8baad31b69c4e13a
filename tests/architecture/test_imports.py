"""Dependencies run one way. Read from the source with `ast`, so a violation fails here
before it can become an import cycle that someone hides inside a function.

    schemas  <-  eventstore  <-  projections  <-  handlers  <-  edges  <-  cli
                                                  (pure models: handlers.observer, handlers.models)

`selfheal/` (the namespace root, the public API) may use everything but the CLI.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("schemas", "eventstore", "projections", "handlers", "edges", "cli")
#: each package may import itself and the layers below it
ALLOWED = {name: set(LAYERS[: i + 1]) for i, name in enumerate(LAYERS)}
ALLOWED["cli"] |= {"selfheal"}
ALLOWED["selfheal"] = set(LAYERS[:-1]) | {"selfheal"}
#: pure models: only the vocabulary below them and themselves
PURE = {"handlers/observer": {"schemas", "handlers.observer"}, "handlers/models": {"schemas", "handlers.models"}}
#: imports that stay inside a function on purpose, and why
DEFERRED = {
    ("edges/nvml.py", "pynvml"): "a missing nvidia-ml-py becomes InventoryUnavailable, not a broken CLI",
    # selfheal.eventstore.postgres imports psycopg, an optional extra: a file log never needs it
    ("eventstore/store.py", "selfheal"): "a missing psycopg is one StoreError for a postgresql:// log only",
    ("eventstore/migration.py", "selfheal"): "`migrate` is the only command that needs psycopg on a file log",
}


def _modules(root: Path):
    for package in (*LAYERS, "selfheal"):
        for path in sorted((root / package).rglob("*.py")):
            yield package, path


def _imports(tree: ast.AST):
    """(node, module name, inside a function) for every import."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child, alias.name, in_function
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child, child.module, in_function
                if child.module == "selfheal":  # `from selfheal import projections`
                    for alias in child.names:
                        yield child, f"selfheal.{alias.name}", in_function
            yield from walk(child, inner)
    yield from walk(tree, False)


def _target(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "selfheal":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "selfheal"


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for package, path in _modules(root):
        relative = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=relative)
        pure = next((allowed for prefix, allowed in PURE.items() if relative.startswith(prefix + "/")), None)
        for node, module, in_function in _imports(tree):
            where = f"{relative}:{node.lineno}"
            if in_function and (relative, module.split(".")[0]) not in DEFERRED:
                found.append(f"{where}: `{module}` is imported inside a function")
            target = _target(module)
            if target is None or (module == "selfheal" and isinstance(node, ast.ImportFrom)):
                continue
            if target not in ALLOWED[package] and relative != "selfheal/__main__.py":
                found.append(f"{where}: {package} may not import {module} ({target} is above it)")
            if pure is not None and target != "selfheal":
                inner = ".".join(module.split(".")[1:3])
                if target != "schemas" and inner not in pure:
                    found.append(f"{where}: a pure model may not import {module}")
    return found


def test_dependencies_run_one_way_and_no_import_hides_in_a_function():
    assert violations() == []


def test_the_check_sees_a_planted_violation(tmp_path):
    for package in (*LAYERS, "selfheal"):  # a copy of the sources: the checkout is never written
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    planted = tmp_path / "schemas" / "_planted_violation.py"
    planted.write_text("from selfheal.handlers.runtime import Runner\n\ndef f():\n    import selfheal.edges\n")
    found = violations(tmp_path)
    assert any("schemas may not import selfheal.handlers.runtime" in v for v in found)
    assert any("imported inside a function" in v and "_planted_violation" in v for v in found)


@pytest.mark.parametrize("package", LAYERS)
def test_every_layer_exists(package):
    assert (ROOT / package / "__init__.py").is_file()
