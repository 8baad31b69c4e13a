"""One namespace: `pip install .` puts `selfheal` and nothing else at the top of site-packages.

The design card's folders stay at the top of the repository; pyproject.toml maps them into
the `selfheal` namespace. These tests keep that mapping whole: every package folder is listed,
a real non-editable install holds every module and data file, and the installed package
imports from a folder that is not the checkout.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str, mapping: dict[str, str]) -> Path:
    """Where a package's files are in the checkout, by the longest mapped prefix."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in mapping:
            return ROOT / mapping[prefix] / Path(*parts[cut:])
    raise AssertionError(f"{package} is not under any mapped folder")


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    setup = _pyproject()
    mapping, listed = setup["package-dir"], set(setup["packages"])
    found = set()
    for top, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([top, *relative.parts]))
    assert listed == found, f"pyproject.toml packages: missing {sorted(found - listed)}, stale {sorted(listed - found)}"
    assert all(_folder(p, mapping).is_dir() for p in listed)
    assert {name.split(".")[0] for name in listed} == {"selfheal"}


def test_a_real_install_holds_only_selfheal_and_runs_from_elsewhere(tmp_path):
    # pip builds a local folder in place: build a copy, so the checkout gets no build/ folder; with
    # the setuptools of the test extra, so the build needs no package index
    source, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info",
                                                                 "__pycache__", ".hypothesis", ".pytest_cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "--target", str(target), str(source)], capture_output=True, text=True,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    top = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info")) and p.name != "bin"}
    assert top == {"selfheal"}, top
    # every module of the checkout and the data the code reads at run time travel with it
    for source in ("handlers/observer/rules/10_memory.toml", "edges/sim/scenarios/no-safe-fix.toml",
                   "schemas/json/IncidentCaptured.json", "eventstore/sqlite.py"):
        assert (target / "selfheal" / source).is_file(), source
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    probe = ("import selfheal, selfheal.handlers.observer as o; "
             "print(selfheal.__file__); print(len(o.builtin_ruleset().rules))")
    ran = subprocess.run([sys.executable, "-I", "-c", probe.replace("import selfheal,", "import sys; "
                          f"sys.path.insert(0, {str(target)!r}); import selfheal,")],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, rules = ran.stdout.split()
    assert where.startswith(str(target)), where
    assert int(rules) > 10


def test_ci_runs_exactly_the_readmes_test_command():
    # CI must meet what a person meets: the README's command, nothing installed beside it
    readme = re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == [readme[1]], (ci, readme[:2])
