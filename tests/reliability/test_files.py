"""Files and permissions: what selfheal creates is owner-only; what it rewrites keeps its mode;
it never follows a symlink out of a deployment's config folder."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.edges.vllm_config import PREVIOUS_SUFFIX, commit, restore_previous, write_atomic
from selfheal.eventstore import open_store
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.config import ConfigError
from selfheal.schemas.serving import ServingConfig
from tests.reliability.hostile import ENV, ROOT, STARTUP

GOOD = ServingConfig(gpu_memory_utilization=0.65, max_model_len=8192, max_num_seqs=4, max_num_batched_tokens=2048)
ORIGINAL = "model: m\n# ours\ngpu-memory-utilization: 0.9\nmax-model-len: 8192\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _cli(*args: str, umask: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfheal", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=60, preexec_fn=lambda: os.umask(umask))


# --- the log ------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_selfheal_init_creates_an_owner_only_log(tmp_path, umask):
    db = tmp_path / "state" / "nested" / "selfheal.db"
    result = _cli("--db", str(db), "init", umask=umask)
    assert result.returncode == 0, result.stderr
    assert mode(db) == 0o600


@pytest.mark.parametrize("command", ["observe", "run"])
def test_every_command_that_creates_the_log_creates_it_owner_only(tmp_path, command):
    toml = tmp_path / "selfheal.toml"
    toml.write_text('[deployments.ws]\nscenario = "workstation-12gb-speech"\n')
    log = tmp_path / "vllm.log"
    log.write_text(STARTUP + "\n")
    db = tmp_path / "selfheal.db"
    args = ["observe", str(log)] if command == "observe" else ["run"]
    result = _cli("--db", str(db), "--config", str(toml), *args, umask=0)
    assert result.returncode == 0, result.stderr
    assert mode(db) == 0o600


def test_the_write_ahead_log_and_shared_memory_files_are_owner_only_too(tmp_path):
    """While the log is open, SQLite's -wal and -shm files hold the same data: same mode."""
    old = os.umask(0)
    try:
        db = tmp_path / "selfheal.db"
        store = open_store(db, create=True)
        from tests.reliability.procs import archived

        store.append("s", [archived(0, i) for i in range(20)])
        other = open_store(db)  # a second connection keeps the WAL in place
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        assert wal.exists() and shm.exists()
        assert (mode(db), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        other.close()
        store.close()
    finally:
        os.umask(old)


# --- config files written by commits ------------------------------------------------------------

@pytest.mark.parametrize("existing_mode", [0o644, 0o640, 0o600, 0o400])
def test_commit_keeps_the_mode_of_the_file_it_replaces(tmp_path, existing_mode):
    path = tmp_path / "vllm.yaml"
    path.write_text(ORIGINAL)
    path.chmod(existing_mode)
    result = commit(path, GOOD, ActuatorBounds())
    assert result.changed
    assert mode(path) == existing_mode
    assert mode(tmp_path / f"vllm.yaml{PREVIOUS_SUFFIX}") == existing_mode
    assert (tmp_path / f"vllm.yaml{PREVIOUS_SUFFIX}").read_text() == ORIGINAL


def test_a_new_config_file_is_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "new.yaml"
        commit(path, GOOD, ActuatorBounds())
        assert mode(path) == 0o600
        write_atomic(tmp_path / "other.yaml", "a: 1\n")
        assert mode(tmp_path / "other.yaml") == 0o600
    finally:
        os.umask(old)


def test_restore_keeps_owner_only_too(tmp_path):
    path = tmp_path / "vllm.yaml"
    path.write_text(ORIGINAL)
    path.chmod(0o600)
    commit(path, GOOD, ActuatorBounds())
    restore_previous(path)
    assert path.read_text() == ORIGINAL and mode(path) == 0o600


# --- symlinks -----------------------------------------------------------------------------------

@pytest.fixture
def layout(tmp_path):
    """/conf (the deployment's config folder) and /outside, with a file there worth protecting."""
    conf, outside = tmp_path / "conf", tmp_path / "outside"
    conf.mkdir()
    outside.mkdir()
    secret = outside / "shadow"
    secret.write_text("root:x:0:0\n")
    secret.chmod(0o644)
    return conf, outside, secret


def _untouched(secret: Path) -> None:
    assert secret.read_text() == "root:x:0:0\n" and mode(secret) == 0o644
    assert sorted(p.name for p in secret.parent.iterdir()) == ["shadow"]


@pytest.mark.parametrize("link", ["absolute", "relative", "dangling", "chain"])
def test_write_atomic_refuses_a_symlink_out_of_the_config_folder(layout, link):
    conf, outside, secret = layout
    target = conf / "vllm.yaml"
    if link == "absolute":
        target.symlink_to(secret)
    elif link == "relative":
        target.symlink_to(Path("..") / "outside" / "shadow")
    elif link == "dangling":
        target.symlink_to(outside / "not-yet")
    else:  # a link in the folder to another link in the folder that leaves it
        (conf / "hop.yaml").symlink_to(secret)
        target.symlink_to(conf / "hop.yaml")
    before = os.readlink(target)
    with pytest.raises(ConfigError, match="refused"):
        write_atomic(target, "gpu-memory-utilization: 0.65\n")
    with pytest.raises(ConfigError, match="refused"):
        commit(target, GOOD, ActuatorBounds())
    _untouched(secret)
    assert os.path.islink(target) and os.readlink(target) == before
    assert not (outside / "not-yet").exists()
    assert not [p for p in conf.iterdir() if not p.is_symlink()], "something was written in the folder"


def test_write_atomic_refuses_a_symlinked_config_folder(layout, tmp_path):
    conf, outside, secret = layout
    linked = tmp_path / "linked-conf"
    linked.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="folder .* is a symlink"):
        write_atomic(linked / "shadow", "x: 1\n")
    _untouched(secret)


def test_a_hard_link_out_of_the_folder_is_replaced_not_written_through(layout):
    """The rename replaces the name in the folder; the file outside keeps its bytes."""
    conf, outside, secret = layout
    target = conf / "vllm.yaml"
    os.link(secret, target)
    write_atomic(target, "gpu-memory-utilization: 0.65\n")
    _untouched(secret)
    assert target.read_text() == "gpu-memory-utilization: 0.65\n"


def test_a_symlink_inside_the_folder_is_followed(layout):
    conf, _, secret = layout
    (conf / "v3.yaml").write_text(ORIGINAL)
    (conf / "current.yaml").symlink_to("v3.yaml")
    commit(conf / "current.yaml", GOOD, ActuatorBounds())
    assert os.path.islink(conf / "current.yaml")
    assert "gpu-memory-utilization: 0.65" in (conf / "v3.yaml").read_text()
    _untouched(secret)


def test_restore_refuses_a_previous_that_links_out(layout):
    conf, _, secret = layout
    target = conf / "vllm.yaml"
    target.write_text(ORIGINAL)
    (conf / f"vllm.yaml{PREVIOUS_SUFFIX}").symlink_to(secret)
    with pytest.raises(ConfigError, match="symlink"):
        restore_previous(target)
    assert target.read_text() == ORIGINAL
    _untouched(secret)
