"""The CLI is a thin shell over the Python API: every command's callback calls the API function
of its name (`selfheal.<name>`, `<group>_<command>` for a group's commands), every such function
exists, and the CLI reaches nothing private and imports nothing inside functions."""
from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import click
import pytest

import selfheal
from selfheal import COMMANDS
from selfheal.cli.main import cli
from selfheal.projections import queries

ROOT = Path(__file__).resolve().parents[2]

#: commands that also reach a second API function: `baseline import DEPLOYMENT` is a word of `baseline`
ALSO = {"baseline": {"baseline_import"}}

#: what cli/ may import from the library besides the API (`import selfheal`): presentation only
PRESENTATION = {
    ("selfheal.eventstore.audit", "default_db_path"),   # the default --db, for the context
    ("selfheal.eventstore.store", "is_server"),         # a --db URL stays a URL, never a Path
    ("selfheal.eventstore.audit", "row_json"),          # `events --json`'s line format
    ("selfheal.eventstore.errors", "StoreError"),       # errors become one line on stderr
    ("selfheal.eventstore.store", "Recorded"),          # what a timeline line describes
    ("selfheal.schemas.config", "ConfigError"),
    ("selfheal.schemas.config", "Settings"),
    ("selfheal.schemas.serving", "TUNABLE"),            # parsing --current KEY=VALUE
    ("selfheal.handlers.loop", "InputError"),           # "FILE: cannot read: ..."
    ("selfheal.handlers.observer", "format_diagnosis"),
    ("selfheal.edges.live", "stop_on_signals"),         # SIGINT/SIGTERM end a watch at its next step
    ("selfheal.eventstore.audit", "DB_ENV"),            # whether --db or $SELFHEAL_DB chose the log (demo)
    ("selfheal.eventstore.recorder", "utc_iso"),        # the log's one time spelling, for every time shown
    ("selfheal.schemas.events", "EVENT_TYPES"),         # `--type` names one of them, or is refused
    ("selfheal.schemas.actuators", "ActuatorBounds"),   # diagnose says when a fix is outside the bounds
    ("selfheal.projections.queries", "DeploymentState"),  # state lists configured deployments with no runs
    ("selfheal.edges.demo", "default_demo_path"),       # demo's temp folder, made before the live timeline
    ("selfheal.edges.demo", "demo_name"),               # a scenario file's name, for the folder and header
    ("selfheal.edges.sim", "load_scenario"),            # a scenario file that does not load: one line before the header
    ("selfheal.edges.operator_service", "serving"),     # --metrics-port and systemd notify around a watch
}


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name), command


def api_name(path: tuple[str, ...]) -> str:
    return "_".join(path).replace("-", "_")


def api_calls(callback) -> set[str]:
    """The `selfheal.<name>(...)` calls in a callback's own source."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(callback)))
    return {node.func.attr for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "selfheal"}


COMMAND_PATHS = [path for path, _ in leaf_commands(cli)]


def test_the_walk_finds_every_command_including_groups():
    names = {api_name(p) for p in COMMAND_PATHS}
    assert {"diagnose", "run", "rules_list", "rules_test", "rules_promote", "export"} <= names
    assert len(COMMAND_PATHS) >= 28


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=api_name)
def test_each_command_calls_the_api_function_of_its_name(path):
    command = dict(leaf_commands(cli))[path]
    name = api_name(path)
    assert name in selfheal.__all__ and callable(getattr(selfheal, name)), f"selfheal.{name} is missing"
    called = api_calls(command.callback)
    wanted = {name} | ALSO.get(name, set())
    assert wanted <= called, (f"`selfheal {' '.join(path)}` must call selfheal.{name}(...) "
                              f"(it calls {sorted(called) or 'no API function'})")


def test_every_api_command_function_has_its_command():
    assert sorted(COMMANDS) == sorted({api_name(p) for p in COMMAND_PATHS} | set().union(*ALSO.values()))
    assert set(COMMANDS) <= set(selfheal.__all__)


def test_the_check_catches_a_command_that_does_the_work_itself():
    @click.command()
    @click.pass_obj
    def history(ctx):
        with selfheal.open_db(ctx.db_path) as store:
            click.echo(queries.history(store))

    assert "history" not in api_calls(history.callback)


@pytest.mark.parametrize("path", sorted((ROOT / "cli").glob("*.py")), ids=lambda p: p.name)
def test_the_cli_imports_the_api_and_presentation_helpers_only(path):
    tree = ast.parse(path.read_text())
    library_modules, reached = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("selfheal.") or alias.name.startswith("selfheal.cli"), \
                    f"{path.name}: line {node.lineno}: import {alias.name} (use the API: import selfheal)"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("selfheal"):
            if node.module == "selfheal.cli" or node.module.startswith("selfheal.cli."):
                continue
            for alias in node.names:
                assert not alias.name.startswith("_"), f"{path.name}: line {node.lineno}: private {alias.name}"
                assert (node.module, alias.name) in PRESENTATION, \
                    f"{path.name}: line {node.lineno}: from {node.module} import {alias.name} (call the API instead)"
                library_modules.add(alias.asname or alias.name)
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
              and isinstance(node.value, ast.Name) and node.value.id in library_modules | {"selfheal"}):
            reached.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not reached, f"{path.name} reaches private names: {reached}"
