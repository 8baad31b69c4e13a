"""Reading deploy/'s files as their runners read them (tests/operator/test_deploy.py): systemd
units with their specifiers and EnvironmentFiles, the Containerfile's stages, the pod's
containers."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
SIDECAR = DEPLOY / "kubernetes" / "sidecar.yaml"
#: the instance each template is checked under
INSTANCES = {"selfheal-observe@.service": "vllm-qwen", "selfheal-supervise@.service": "qwen"}


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd's syntax: [Section]s of Key=Value lines, repeatable keys, # and ; comments,
    a trailing backslash continuing a line."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current, pending = None, ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        line = pending + line
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()):
            pytest.fail(f"{path.name}:{number}: not a systemd unit line: {raw!r}")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict, key: str, section: str = "Service") -> str:
    found = values(unit, key, section)
    assert len(found) == 1, f"[{section}] {key}= given {len(found)} times"
    return found[0]


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and line[0] not in "#;")
    return {k.strip(): v.strip().strip('"\'') for k, v in pairs}


def seconds(span: str) -> float:
    """A systemd time span as the units write them: `20min`, `90s`, `1min 30s`."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]*)", span)
    assert parts and all(u in units for _, u in parts), f"time span {span!r}"
    return sum(int(n) * units[u] for n, u in parts)


def example_env(path: str, instance: str | None) -> Path:
    """Beside the units, the example of each EnvironmentFile: the instance's part named `example`."""
    name = Path(path.lstrip("-")).name
    return DEPLOY / "systemd" / (name.replace(instance, "example") if instance else name)


class Unit:
    """One unit file as systemd would start it: the instance filled in, the environment read."""

    def __init__(self, path: Path):
        self.path, self.name = path, path.name
        self.instance = INSTANCES.get(path.name)
        if "@" in path.name:
            assert self.instance, f"{path.name} is a template: give INSTANCES an instance for it"
        self.unit = unit_file(path)

    def specifiers(self, text: str, instance: str | None = None) -> str:
        instance = instance or self.instance
        table = {"i": instance, "I": instance, "%": "%", "n": self.name.replace("@.", f"@{instance}.")}

        def fill(m):
            assert table.get(m.group(1)) is not None, f"{self.name}: specifier %{m.group(1)} unknown to this test"
            return table[m.group(1)]
        return re.sub(r"%(.)", fill, text)

    def environment(self, instance: str | None = None, read=lambda path, inst: env_file(example_env(path, inst))):
        env = {}
        for value in values(self.unit, "EnvironmentFile"):
            env.update(read(self.specifiers(value, instance), instance or self.instance))
        for value in values(self.unit, "Environment"):
            for word in shlex.split(value):
                env.update([word.split("=", 1)])
        return env

    def argv(self, env: dict[str, str], instance: str | None = None) -> list[str]:
        """ExecStart split as systemd splits it, then %-specifiers and ${VAR} (one word each)."""
        words = shlex.split(self.specifiers(one(self.unit, "ExecStart"), instance))
        assert words[0].startswith("/"), f"{self.name}: ExecStart must start with an absolute path"

        def var(m):
            assert m.group(1) in env, f"{self.name}: ExecStart uses ${{{m.group(1)}}}, which no EnvironmentFile sets"
            return env[m.group(1)]
        return [re.sub(r"\$\{(\w+)\}", var, w) for w in words]


def containerfile() -> list[list[tuple[str, str]]]:
    """The Containerfile's stages, each a list of (INSTRUCTION, rest) with continuations joined."""
    stages, pending = [], ""
    for line in CONTAINERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        instruction, _, rest = (pending + line).strip().partition(" ")
        pending = ""
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def final_stage() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for instruction, rest in containerfile()[-1]:
        found.setdefault(instruction, []).append(rest)
    return found


def container_command() -> list[str]:
    stage = final_stage()
    return json.loads(stage["ENTRYPOINT"][-1]) + json.loads(stage["CMD"][-1])


def healthcheck() -> list[str]:
    options, _, command = final_stage()["HEALTHCHECK"][-1].partition("CMD ")
    return json.loads(command)


def sidecars() -> dict[str, dict]:
    pod = yaml.safe_load(SIDECAR.read_text())
    assert pod["kind"] == "Pod" and pod["spec"]["containers"], "sidecar.yaml: a Pod with containers"
    return {c["name"]: c for c in pod["spec"]["containers"] if c.get("command", [""])[0] == "selfheal"}


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None
