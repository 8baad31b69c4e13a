"""Issue 18.3: deploy/ (systemd units, a container, a Kubernetes sidecar) checked against the CLI.

Every command line these files hold is parsed by the installed CLI's own click parser in a
subprocess, so a renamed or retyped option fails here and not on an operator's machine; then
each one is started for real the way its runner would start it (systemd: the EnvironmentFiles,
specifiers, $NOTIFY_SOCKET, $WATCHDOG_USEC; the container: its ENV, ENTRYPOINT and CMD and then
its HEALTHCHECK; the pod: each selfheal container's env and its liveness probe), with only
their absolute paths rerooted into a temporary folder and the metrics port made a free one.
The units also go through `systemd-analyze verify` and `security --offline` where systemd is
installed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from selfheal.schemas.config import DeploymentSettings, LoadPhaseSettings, ReloadSettings, VerifySettings
from tests.operator.conftest import SELFHEAL, free_port, scrape, until
from tests.operator.deploy_files import (DEPLOY, INSTANCES, ROOT, UNITS, Unit, container_command, containerfile,
                                         example_env, final_stage, healthcheck, one, option, seconds,
                                         sidecars, values)

HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
             "CapabilityBoundingSet": ""}
# `systemd-analyze security` exposure (0-100) each unit has now: dropping a hardening line fails
EXPOSURE = {"selfheal-run.service": 36, "selfheal-observe@.service": 20, "selfheal-supervise@.service": 36}
assert {u.name for u in UNITS} == set(EXPOSURE), "a unit without its checks, or checks without their unit"


# -- every command line, through the installed CLI's own parser ---------------------------------

PARSE = r"""
import json, sys, click
from selfheal.cli.main import cli
for argv in json.load(sys.stdin):
    try:
        with cli.make_context("selfheal", list(argv)) as ctx:
            protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
            name, command, rest = cli.resolve_command(ctx, [*protected, *ctx.args])
            with command.make_context(name, rest, parent=ctx) as sub:
                print(json.dumps({"command": name, "params": sub.params}, default=str))
    except click.ClickException as exc:
        print(json.dumps({"error": exc.format_message()}))
"""


def command_lines() -> dict[str, list[str]]:
    """Every selfheal command line deploy/ holds, without the program name."""
    lines = {}
    for path in UNITS:
        unit = Unit(path)
        lines[path.name] = unit.argv(unit.environment())[1:]
    lines["Containerfile"] = container_command()[1:]
    for name, container in sidecars().items():
        lines[f"sidecar.yaml:{name}"] = [*container["command"][1:], *container.get("args", [])]
    return lines


def parsed(lines: dict[str, list[str]]) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-c", PARSE], input=json.dumps(list(lines.values())),
                         capture_output=True, text=True, timeout=60)
    answers = out.stdout.splitlines()
    assert out.returncode == 0 and len(answers) == len(lines), out.stderr
    return dict(zip(lines, map(json.loads, answers)))


@pytest.fixture(scope="module")
def accepted():
    return parsed(command_lines())


EXPECTED = {"selfheal-run.service": "run", "selfheal-observe@.service": "observe",
            "selfheal-supervise@.service": "supervise", "Containerfile": "run",
            "sidecar.yaml:selfheal-log": "observe", "sidecar.yaml:selfheal-metrics": "observe"}


@pytest.mark.parametrize("source", sorted(EXPECTED))
def test_each_command_line_is_one_the_cli_accepts(accepted, source):
    result = accepted[source]
    assert "error" not in result, f"{source}: the CLI refuses its command line: {result['error']}"
    assert result["command"] == EXPECTED[source]
    params = result["params"]
    assert params["metrics_port"] is not None, f"{source}: no --metrics-port"
    if result["command"] == "run":
        assert params["follow"], f"{source}: run without --follow ends when idle"


def test_a_renamed_option_is_refused_by_that_parse():
    lines = command_lines()
    broken = {"run": [w.replace("--metrics-port", "--metrics-prot") for w in lines["selfheal-run.service"]],
              "port": [w.replace("9469", "99999") for w in lines["Containerfile"]]}
    result = parsed(broken)
    assert "No such option '--metrics-prot'" in result["run"]["error"]
    assert "99999 is not in the range" in result["port"]["error"]
    assert set(EXPECTED) == set(lines), "a command line in deploy/ without its expected command"


# -- the units ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_unit_is_a_hardened_notify_service_with_its_environment_files(path):
    unit = Unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.unit)
    assert one(unit.unit, "Type") == "notify"  # every command here speaks sd_notify
    assert "130" in one(unit.unit, "SuccessExitStatus").split(), "SIGTERM's exit 130 would read as a failure"
    assert one(unit.unit, "User") not in ("root", "0")
    for key, value in HARDENING.items():
        assert one(unit.unit, key) == value, f"{path.name}: {key}={value} expected"
    for value in values(unit.unit, "EnvironmentFile"):
        example = example_env(unit.specifiers(value), unit.instance)
        assert example.is_file(), f"{path.name}: EnvironmentFile {value} has no example {example.name} beside it"
    argv = unit.argv(unit.environment())
    assert argv[1:3] == ["--log-format", "json"], f"{path.name}: journald gets JSON lines"
    assert "SELFHEAL_DB" in unit.environment() and "--db" not in argv, "the log comes from the EnvironmentFile"


def test_the_loops_watchdog_outlasts_its_longest_step():
    # a canary waits for vLLM's health and then runs its load phase, all in one handler step;
    # a commit reloads and verifies in one step: the watchdog must not fire during either
    run = Unit(DEPLOY / "systemd" / "selfheal-run.service")
    canary = DeploymentSettings().health_timeout_s + LoadPhaseSettings().timeout_s
    commit = ReloadSettings(method="none").timeout_s + VerifySettings().deadline_s
    assert seconds(one(run.unit, "WatchdogSec")) > max(canary, commit) * 1.5
    # supervise's pings follow the loop's handlers, which run elsewhere: no watchdog for it
    assert not values(Unit(DEPLOY / "systemd" / "selfheal-supervise@.service").unit, "WatchdogSec")


def installed_copies(tmp_path) -> list[Path]:
    """The units with ExecStart pointing at the installed selfheal, each template under its instance."""
    folder = tmp_path / "units"
    folder.mkdir()
    out = []
    for path in UNITS:
        text = re.sub(r"^ExecStart=\S+", f"ExecStart={SELFHEAL}", path.read_text(), flags=re.M)
        (folder / path.name).write_text(text)
        instance = INSTANCES.get(path.name)
        out.append(folder / (path.name.replace("@.", f"@{instance}.") if instance else path.name))
    return out


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed: the units are checked by the parser above only")
    return found


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path):
    analyze = systemd_analyze()
    for unit in installed_copies(tmp_path):
        out = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
        # verify exits 0 on an unknown key or a bad value, but says so on stderr
        assert out.returncode == 0 and not out.stderr.strip(), f"{unit.name}: {out.stderr or out.stdout}"


def test_systemd_analyze_security_exposure_stays_where_it_is(tmp_path):
    analyze = systemd_analyze()
    for unit in installed_copies(tmp_path):
        template = re.sub(r"@[^.]+\.", "@.", unit.name)
        out = subprocess.run([analyze, "security", "--offline=true", f"--threshold={EXPOSURE[template]}", str(unit)],
                             capture_output=True, text=True, timeout=60)
        if "--offline" in out.stderr and "unrecognized" in out.stderr:
            pytest.skip(f"this systemd-analyze has no --offline (systemd 250+): {out.stderr.strip()}")
        assert out.returncode == 0, f"{unit.name}: exposure above {EXPOSURE[template] / 10:g}:\n{out.stdout[-400:]}"


# -- started for real, as their runners start them ----------------------------------------------

def rerooter(root: Path, prefixes):
    """A word under one of `prefixes` (folders systemd or a volume provides) moved under `root`."""
    def move(word: str) -> str:
        for prefix in prefixes:
            if word == prefix or word.startswith(prefix + "/"):
                return str(root) + word
        return word
    return move


def configure(config: Path, root: Path) -> None:
    """The deployment every example names (qwen), production a sleeping process for supervise."""
    yaml_file = root / "etc" / "vllm" / "qwen.yaml"
    yaml_file.parent.mkdir(parents=True, exist_ok=True)
    yaml_file.write_text("max_model_len: 4096\n")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[deployments.qwen]\nscenario = "workstation-12gb-speech"\nconfig_file = "{yaml_file}"\n'
                      f'serve_command = {json.dumps([sys.executable, "-c", "import time; time.sleep(600)"])}\n')
    out = subprocess.run([SELFHEAL, "--db", str(root / "var/lib/selfheal/selfheal.db"), "init"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


class Started:
    """A command started by `started`: its process, metrics port and notify socket; `code` and
    `stderr` once it is stopped."""

    def __init__(self, proc, port: int, sock: socket.socket, err):
        self.proc, self.port, self.sock, self._err = proc, port, sock, err
        self.code: int | None = None
        self.stderr = ""

    def until(self, check, what: str):
        """`check()` polled, failing at once with its standard error if the command has ended."""
        def alive_check():
            if self.proc.poll() is not None:
                self._err.seek(0)
                pytest.fail(f"{what}: the command ended with {self.proc.returncode} first:\n{self._err.read()}")
            return check()
        return until(alive_check, what)


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], cwd: Path, *, watchdog_s: float | None = None):
    """`argv` with a free metrics port, its own environment only (plus PATH), $NOTIFY_SOCKET set
    as systemd sets it; stopped with SIGTERM at the end of the block."""
    port = free_port()
    argv = [SELFHEAL, *argv[1:]]
    argv[argv.index("--metrics-port") + 1] = str(port)
    notify = cwd / "notify.sock"
    env = {"PATH": os.environ["PATH"], **env, "NOTIFY_SOCKET": str(notify)}
    if watchdog_s:
        env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, open(cwd / "stderr", "w+") as err:
        sock.bind(str(notify))
        sock.settimeout(30)
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        service = Started(proc, port, sock, err)
        try:
            yield service
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                service.code = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
            err.seek(0)
            service.stderr = err.read()
    assert "Traceback" not in service.stderr, service.stderr


def journal_instance(default: str) -> str:
    """observe --journal refuses a unit systemd does not know: where systemd runs, follow one it has."""
    systemctl = shutil.which("systemctl")
    state = subprocess.run([systemctl, "show", "--property=LoadState", "--value", default], capture_output=True,
                           text=True, timeout=10).stdout.strip() if systemctl else ""
    return "systemd-journald" if state == "not-found" else default


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_unit_starts_as_systemd_starts_it_and_a_stop_is_a_success(path, tmp_path):
    unit = Unit(path)
    instance = journal_instance(unit.instance) if "observe" in path.name else unit.instance
    folders = {"StateDirectory": "/var/lib/", "RuntimeDirectory": "/run/", "LogsDirectory": "/var/log/"}
    prefixes = ["/etc/selfheal", *(f"{where}{unit.specifiers(name, instance)}" for key, where in folders.items()
                                   for name in values(unit.unit, key)),
                *(p.lstrip("-") for p in values(unit.unit, "ReadWritePaths"))]
    move = rerooter(tmp_path, prefixes)
    for prefix in prefixes:  # systemd makes the unit's folders before it starts it
        (tmp_path / prefix.lstrip("/")).mkdir(parents=True, exist_ok=True)
    env = {k: move(v) for k, v in unit.environment(instance).items()}
    configure(Path(env["SELFHEAL_CONFIG"]), tmp_path)
    argv = [move(w) for w in unit.argv(env, instance)]
    watchdog = values(unit.unit, "WatchdogSec")
    with started(argv, env, tmp_path, watchdog_s=seconds(watchdog[0]) if watchdog else None) as service:
        ready = service.sock.recv(4096).decode().split("\n")
        assert "READY=1" in ready and f"MAINPID={service.proc.pid}" in ready, ready
        assert "selfheal_events_total" in service.until(lambda: scrape(service.port), f"{path.name}'s /metrics")
        if pidfile := option(argv, "--pidfile"):  # where reload = signal finds it
            pid = str(service.proc.pid)
            service.until(lambda: Path(pidfile).is_file() and Path(pidfile).read_text().strip() == pid,
                          f"{pidfile} holding selfheal's pid")
    allowed = {0, *map(int, " ".join(values(unit.unit, "SuccessExitStatus")).split())}
    assert service.code in allowed, f"{path.name}: exit {service.code} after SIGTERM:\n{service.stderr}"
    lines = [line for line in service.stderr.splitlines() if line.startswith("{")]
    assert lines and all(json.loads(line)["level"] for line in lines)  # --log-format json


def test_the_containers_command_serves_what_its_healthcheck_asks(tmp_path):
    stage, argv = final_stage(), container_command()
    port = option(argv, "--metrics-port")
    assert option(argv, "--metrics-address") == "0.0.0.0", "a container's loopback is its own: serve outside it"
    assert stage["EXPOSE"] == [port]
    assert stage["USER"][-1] not in ("root", "0")
    probe = healthcheck()
    assert f"127.0.0.1:{port}/healthz" in " ".join(probe), "the health check asks the port the command serves"
    env = dict(pair.split("=", 1) for rest in stage["ENV"] for pair in shlex.split(rest))
    volumes = [v for rest in stage.get("VOLUME", []) for v in shlex.split(rest)]
    move = rerooter(tmp_path, [*volumes, str(Path(env["SELFHEAL_CONFIG"]).parent)])  # the mounts of the docs
    env = {k: move(v) for k, v in env.items() if k != "PATH"}
    (tmp_path / volumes[0].lstrip("/")).mkdir(parents=True)
    configure(Path(env["SELFHEAL_CONFIG"]), tmp_path)

    def health(port_now: int) -> int:
        check = [sys.executable if w == "python" else w.replace(f":{port}/", f":{port_now}/") for w in probe]
        return subprocess.run(check, capture_output=True, timeout=30).returncode
    with started(argv, env, tmp_path) as service:
        service.until(lambda: health(service.port) == 0, "the HEALTHCHECK passing")
    assert health(service.port) != 0, "the health check must fail once selfheal is gone"
    assert service.code == 130, service.stderr


def test_the_image_copies_every_package_folder_and_installs_from_them_alone(tmp_path):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    build = containerfile()[0]
    copied = {w for instruction, rest in build if instruction == "COPY" for w in shlex.split(rest)[:-1]}
    assert folders | {"pyproject.toml", "README.md"} <= copied, f"not copied: {sorted(folders - copied)}"
    install = " ".join(rest for instruction, rest in build if instruction == "RUN")
    for extra in re.findall(r"\.\[(\w+)\]", install):
        assert extra in pyproject["project"]["optional-dependencies"], f"the image installs an unknown extra {extra}"
    source, target = tmp_path / "src", tmp_path / "site"
    source.mkdir()
    for name in sorted(copied):  # the build stage's folder, as its COPY lines fill it
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(source)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    probe = (f"import sys; sys.path.insert(0, {str(target)!r}); "
             "from selfheal.cli.main import cli; print(sorted(cli.commands))")
    ran = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0 and "'run'" in ran.stdout, ran.stderr[-2000:]


def image_uid() -> int:
    runs = " ".join(rest for instruction, rest in containerfile()[-1] if instruction == "RUN")
    return int(re.search(r"useradd\b.*--uid (\d+)", runs).group(1))


def test_the_sidecars_watch_what_vllm_writes_and_are_probed_where_they_serve():
    pod = yaml.safe_load((DEPLOY / "kubernetes" / "sidecar.yaml").read_text())
    vllm = next(c for c in pod["spec"]["containers"] if c["name"] == "vllm")
    vllm_mounts = {m["name"]: m["mountPath"] for m in vllm.get("volumeMounts", [])}
    vllm_port = {p["containerPort"] for p in vllm["ports"]}
    assert sidecars(), "no selfheal container in sidecar.yaml"
    for name, c in sidecars().items():
        argv = [*c["command"], *c["args"]]
        port = int(option(argv, "--metrics-port"))
        assert option(argv, "--metrics-address") == "0.0.0.0", f"{name}: the kubelet probes the pod's address"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}, name
        assert port in {p["containerPort"] for p in c["ports"]}, name
        assert c["securityContext"]["runAsUser"] == image_uid(), f"{name}: the image's user"
        assert {e["name"] for e in c["env"]} >= {"SELFHEAL_DB", "SELFHEAL_CONFIG"}, name
        if followed := option(argv, "--follow"):
            shared = [m for m in c["volumeMounts"] if vllm_mounts.get(m["name"]) == m["mountPath"]
                      and followed.startswith(m["mountPath"] + "/")]
            assert shared, f"{name}: {followed} is on no volume the vllm container mounts at the same path"
            assert followed in " ".join(vllm.get("args", [])), f"{name}: vllm does not write {followed}"
        if url := option(argv, "--metrics"):
            assert url.startswith("http://127.0.0.1:") and int(url.split(":")[2].split("/")[0]) in vllm_port, name


@pytest.mark.parametrize("name", sorted(sidecars()))
def test_each_sidecar_starts_and_answers_its_liveness_probe(name, tmp_path):
    c = sidecars()[name]
    move = rerooter(tmp_path, [m["mountPath"] for m in c["volumeMounts"]])
    env = {e["name"]: move(e["value"]) for e in c["env"] if "value" in e}
    env["SELFHEAL_DB"] = str(tmp_path / "var/lib/selfheal/selfheal.db")  # the Secret's URL, here a file
    configure(Path(env["SELFHEAL_CONFIG"]), tmp_path)
    argv = [move(w) for w in [*c["command"], *c["args"]]]
    if followed := option(argv, "--follow"):
        Path(followed).parent.mkdir(parents=True, exist_ok=True)
        Path(followed).write_text("")
    with started(argv, env, tmp_path) as service:
        probe = c["livenessProbe"]["httpGet"]
        url = f"http://127.0.0.1:{service.port}{probe['path']}"
        assert service.until(lambda: urllib.request.urlopen(url, timeout=5).read(), f"{name}'s liveness probe") == b"ok\n"
        assert "selfheal_events_total" in scrape(service.port)
    assert service.code in (0, 130), service.stderr


def test_the_readmes_unit_is_the_files_own_lines():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Running selfheal under systemd"):]
    block = re.search(r"```ini\n(.*?)```", section, re.S).group(1)
    unit = (DEPLOY / "systemd" / "selfheal-run.service").read_text().splitlines()
    shown = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert shown and [line for line in shown if line not in unit] == [], "README's unit differs from the file"
