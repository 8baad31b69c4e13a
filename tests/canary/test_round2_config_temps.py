"""Issue 13, item 11: the temporary files of a config write that was killed are cleaned by the
next write of that file, so the `selfheal run` after a crash leaves none behind.

The kill is real: a forked writer SIGKILLs itself inside `commit`, at its first rename, when
both temporaries (the new file and the new `.previous`) are complete on disk.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import yaml

from selfheal.edges import vllm_config
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import ServingConfig
from tests.baseline.test_commit_crash import NEW, ORIGINAL, prepare, selfheal_run

OTHER = ServingConfig(gpu_memory_utilization=0.7, max_model_len=4096, max_num_seqs=8, max_num_batched_tokens=2048)


def temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if vllm_config.TMP_MARK in n)


def killed_write(target: Path, config: ServingConfig, do=None) -> None:
    """A writer process killed by SIGKILL at its first rename, its temporaries left behind."""
    pid = os.fork()
    if pid == 0:
        try:
            os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
            (do or (lambda: vllm_config.commit(target, config, ActuatorBounds())))()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_the_run_after_a_killed_commit_leaves_no_temporary_file(tmp_path):
    config_file, toml, db = prepare(tmp_path)
    killed_write(config_file, NEW)
    left = temps(tmp_path)
    assert len(left) == 2 and config_file.read_text() == ORIGINAL     # the killed write changed nothing
    run = selfheal_run(toml, db)
    assert run.wait(timeout=60) == 0, run.stderr.read().decode()
    assert temps(tmp_path) == [], f"the killed write's temporaries outlived the next run: {left}"
    assert yaml.safe_load(config_file.read_text())["gpu-memory-utilization"] == 0.65
    assert (tmp_path / "vllm.yaml.previous").read_text() == ORIGINAL


def test_a_commit_cleans_its_own_file_s_leftovers_and_no_other_s(tmp_path):
    mine, other = tmp_path / "vllm.yaml", tmp_path / "other.yaml"
    for path in (mine, other):
        path.write_text(ORIGINAL)
        killed_write(path, NEW)
    theirs = [n for n in temps(tmp_path) if n.startswith(".other.yaml")]
    assert len(theirs) == 2
    vllm_config.commit(mine, OTHER, ActuatorBounds())
    assert temps(tmp_path) == theirs                  # another file's temporaries are its own writer's
    assert yaml.safe_load(mine.read_text())["max-model-len"] == 4096 and other.read_text() == ORIGINAL


def test_an_unchanged_commit_and_a_restore_clean_too(tmp_path):
    target = tmp_path / "vllm.yaml"
    target.write_text(ORIGINAL)
    vllm_config.commit(target, NEW, ActuatorBounds())
    killed_write(target, OTHER)
    assert temps(tmp_path)
    assert not vllm_config.commit(target, NEW, ActuatorBounds()).changed   # nothing to write, still cleaned
    assert temps(tmp_path) == []
    killed_write(target, OTHER, do=lambda: vllm_config.restore_previous(target))
    assert temps(tmp_path)
    vllm_config.restore_previous(target)
    assert temps(tmp_path) == [] and target.read_text() == ORIGINAL
