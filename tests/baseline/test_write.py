"""write_atomic, commit and restore_previous on a real folder."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest
import yaml

from selfheal.edges.vllm_config import clean_stale_temps, commit, restore_previous, write_atomic
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.config import ConfigError
from selfheal.schemas.serving import ServingConfig

BOUNDS = ActuatorBounds()
GOOD = ServingConfig(gpu_memory_utilization=0.8, max_model_len=4096, max_num_seqs=8,
                     max_num_batched_tokens=2048, enforce_eager=False)
EXISTING = "# ops owns this file\nmodel: Qwen/Qwen2.5-0.5B-Instruct\nport: 8000  # keep\nmax-num-seqs: 4\n"


def temps(folder) -> list[str]:
    return [n for n in os.listdir(folder) if ".selfheal-tmp-" in n]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_keeps_permissions_and_previous(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text("a: 1\n")
    os.chmod(target, 0o640)
    result = write_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 2\n" and mode(target) == 0o640
    assert result.changed and result.bytes == 5 and result.path == target
    assert result.sha256 == hashlib.sha256(b"a: 2\n").hexdigest()
    assert result.previous_path == tmp_path / "vllm.yaml.previous"
    assert result.previous_path.read_text() == "a: 1\n" and mode(result.previous_path) == 0o640
    assert temps(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another owner")
def test_write_keeps_the_owner(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text("a: 1\n")
    os.chown(target, 4321, 4322)
    write_atomic(target, "a: 2\n")
    for path in (target, tmp_path / "vllm.yaml.previous"):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_new_file_is_private_unless_a_mode_is_given(tmp_path):
    old = os.umask(0o000)  # fchmod, not the umask, decides
    try:
        r = write_atomic(tmp_path / "a.yaml", "a: 1\n")
        write_atomic(tmp_path / "b.yaml", "a: 1\n", mode=0o644)
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.yaml") == 0o600 and mode(tmp_path / "b.yaml") == 0o644
    assert r.previous_path is None and not (tmp_path / "a.yaml.previous").exists()


def test_same_bytes_write_nothing_and_keep_the_rollback_target(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text("a: 1\n")
    write_atomic(target, "a: 2\n")
    before = os.stat(target).st_ino
    again = write_atomic(target, "a: 2\n")
    assert not again.changed and os.stat(target).st_ino == before
    assert (tmp_path / "vllm.yaml.previous").read_text() == "a: 1\n"


def test_keep_previous_false(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text("a: 1\n")
    assert write_atomic(target, "a: 2\n", keep_previous=False).previous_path is None
    assert not (tmp_path / "vllm.yaml.previous").exists()


def test_refuses_symlink_out_of_the_folder_and_symlinked_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "real.yaml").write_text("a: 1\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "vllm.yaml").symlink_to(outside / "real.yaml")
    with pytest.raises(ConfigError, match="symlink to .* outside its folder"):
        write_atomic(conf / "vllm.yaml", "a: 2\n")
    linked = tmp_path / "linked"
    linked.symlink_to(outside)
    with pytest.raises(ConfigError, match="folder .* is a symlink"):
        write_atomic(linked / "real.yaml", "a: 2\n")
    with pytest.raises(ConfigError, match="symlink"):
        commit(conf / "vllm.yaml", GOOD, BOUNDS)
    assert (outside / "real.yaml").read_text() == "a: 1\n"
    assert sorted(os.listdir(conf)) == ["vllm.yaml"] and sorted(os.listdir(outside)) == ["real.yaml"]


def test_symlink_inside_the_folder_is_written_through(tmp_path):
    (tmp_path / "v3.yaml").write_text("a: 1\n")
    (tmp_path / "current.yaml").symlink_to("v3.yaml")
    result = write_atomic(tmp_path / "current.yaml", "a: 2\n")
    assert result.path == tmp_path / "v3.yaml"
    assert os.path.islink(tmp_path / "current.yaml") and (tmp_path / "current.yaml").read_text() == "a: 2\n"


def test_refuses_a_folder_as_target(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        write_atomic(tmp_path / "d", "a: 1\n")


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text("a: 1\n")
    (tmp_path / "vllm.yaml.previous").mkdir()  # os.replace onto a folder fails after both temps exist
    with pytest.raises(ConfigError, match="cannot write"):
        write_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 1\n" and temps(tmp_path) == []


def test_clean_stale_temps_removes_only_leftovers(tmp_path):
    for name in (".vllm.yaml.selfheal-tmp-ab12_xyz", ".vllm.yaml.previous.selfheal-tmp-q1w2e3r4"):
        (tmp_path / name).write_text("partial")
    keep = ["vllm.yaml", ".hidden", "x.selfheal-tmp-zz"]
    for name in keep:
        (tmp_path / name).write_text("a: 1\n")
    assert clean_stale_temps(tmp_path, min_age_s=3600) == []
    removed = clean_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == [".vllm.yaml.previous.selfheal-tmp-q1w2e3r4",
                                               ".vllm.yaml.selfheal-tmp-ab12_xyz"]
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


def test_commit_writes_keeps_and_is_idempotent(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text(EXISTING)
    os.chmod(target, 0o640)
    first = commit(target, GOOD, BOUNDS)
    assert first.changed and first.method == "lines"
    text = target.read_text()
    assert text.startswith("# ops owns this file\nmodel: Qwen/Qwen2.5-0.5B-Instruct\nport: 8000  # keep\nmax-num-seqs: 8\n")
    data = yaml.safe_load(text)
    assert data["max-model-len"] == 4096 and data["gpu-memory-utilization"] == 0.8 and data["port"] == 8000
    assert mode(target) == 0o640 and (tmp_path / "vllm.yaml.previous").read_text() == EXISTING
    second = commit(target, GOOD, BOUNDS)
    assert not second.changed and second.sha256 == first.sha256 and target.read_text() == text
    assert (tmp_path / "vllm.yaml.previous").read_text() == EXISTING


def test_commit_creates_a_missing_file(tmp_path):
    result = commit(tmp_path / "new.yaml", GOOD, BOUNDS)
    assert result.method == "new" and result.previous_path is None
    assert yaml.safe_load((tmp_path / "new.yaml").read_text())["max-num-seqs"] == 8


def test_commit_refuses_out_of_bounds_with_nothing_written(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text(EXISTING)
    with pytest.raises(ConfigError) as err:
        commit(target, GOOD.changed(max_num_seqs=64, gpu_memory_utilization=0.99), BOUNDS)
    assert "max_num_seqs=64 outside [2, 16]" in str(err.value) and "gpu_memory_utilization=0.99" in str(err.value)
    with pytest.raises(ConfigError, match="enforce_eager"):
        commit(target, GOOD.changed(enforce_eager=True), ActuatorBounds(enforce_eager_allowed=False))
    assert target.read_text() == EXISTING and sorted(os.listdir(tmp_path)) == ["vllm.yaml"]


@pytest.mark.parametrize("bad, where", [("model: m\n  port: 1\n", ":2:7:"), ("- a\n- b\n", ":1:1:")])
def test_commit_refuses_unparseable_existing_yaml(tmp_path, bad, where):
    target = tmp_path / "vllm.yaml"
    target.write_text(bad)
    with pytest.raises(ConfigError) as err:
        commit(target, GOOD, BOUNDS)
    assert str(err.value).startswith(f"{target}{where}")
    assert target.read_text() == bad and sorted(os.listdir(tmp_path)) == ["vllm.yaml"]


def test_restore_previous(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text(EXISTING)
    os.chmod(target, 0o640)
    commit(target, GOOD, BOUNDS)
    restored = restore_previous(target)
    assert restored.changed and target.read_text() == EXISTING and mode(target) == 0o640
    assert restore_previous(target).changed is False  # a resumed rollback writes nothing twice
    assert target.read_text() == EXISTING and temps(tmp_path) == []


def test_restore_previous_without_one(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text(EXISTING)
    with pytest.raises(ConfigError, match="no previous version"):
        restore_previous(target)
    (tmp_path / "vllm.yaml.previous").write_text("a: [\n")
    with pytest.raises(ConfigError, match=r"vllm\.yaml\.previous:2:1: not valid YAML"):
        restore_previous(target)
    assert target.read_text() == EXISTING


def test_restore_previous_recreates_a_deleted_file_with_its_permissions(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text(EXISTING)
    os.chmod(target, 0o644)
    commit(target, GOOD, BOUNDS)
    target.unlink()
    restore_previous(target)
    assert target.read_text() == EXISTING and mode(target) == 0o644


def test_restore_previous_refuses_a_symlinked_previous(tmp_path):
    (tmp_path / "elsewhere.yaml").write_text("a: 1\n")
    (tmp_path / "vllm.yaml").write_text(EXISTING)
    (tmp_path / "vllm.yaml.previous").symlink_to(tmp_path / "elsewhere.yaml")
    with pytest.raises(ConfigError, match="symlink"):
        restore_previous(tmp_path / "vllm.yaml")
    assert (tmp_path / "vllm.yaml").read_text() == EXISTING


def test_commit_of_a_flow_style_file_round_trips(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text("{model: m, port: 8000, max_num_seqs: 4}\n")
    result = commit(target, GOOD, BOUNDS)
    assert result.method == "round-trip"
    data = yaml.safe_load(target.read_text())
    assert data["model"] == "m" and data["port"] == 8000 and data["max_num_seqs"] == 8
    assert "max-num-seqs" not in data  # the file's spelling kept
