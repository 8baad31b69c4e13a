import pytest

from selfheal.schemas.config import ConfigError, load_settings, parse_settings


def test_defaults_are_missions():
    s = parse_settings("")
    assert (s.mode, s.rate_limit.runs, s.rate_limit.window_hours, s.rate_limit.cooldown_hours) == ("dev", 3, 24, 6)
    assert s.rate_limit.backoff_after_failures == 2
    assert s.observer.safety_buffer == 0.10
    assert s.tournament.max_candidates == 6 and s.tournament.max_changes == 2


@pytest.mark.parametrize("text, message", [
    ('mode = "auto"', "selfheal.toml: mode: 'auto' is not allowed; allowed: 'dev', 'prod' or 'disabled'"),
    ("[rate_limit]\nruns = 0", "selfheal.toml: rate_limit.runs: Input should be greater than or equal to 1; allowed: >= 1"),
    ("[deployments.chat]\nmodle = 'x'", "selfheal.toml: deployments.chat.modle: unknown key"),
    ("[deployments.chat.actuators.max_num_seqs]\nmin = 8\nmax = 2\nstep = 2", "min (8.0) is above max (2.0)"),
    ("[deployments.chat.actuators.gpu_memory_utilization]\nmin = 0.5\nmax = 1.2\nstep = 0.05", "must lie in (0, 1]"),
    ("[deployments.chat.actuators.kv_cache]\nmin = 1\nmax = 2\nstep = 1", "deployments.chat.actuators.kv_cache"),
    ("mode = ", "selfheal.toml: not valid TOML"),
])
def test_errors_name_file_key_problem_and_allowed(text, message):
    with pytest.raises(ConfigError) as err:
        parse_settings(text)
    assert message in str(err.value)


def test_environment_overrides_mode():
    s = parse_settings('mode = "prod"')
    assert s.effective_mode({}) == "prod"
    assert s.effective_mode({"SELFHEAL_MODE": "disabled"}) == "disabled"
    with pytest.raises(ConfigError, match="SELFHEAL_MODE='later'"):
        s.effective_mode({"SELFHEAL_MODE": "later"})


def test_deployment_bounds_override_defaults():
    s = parse_settings("[deployments.chat.actuators.max_model_len]\nmin = 4096\nmax = 131072\nstep = 4096")
    bounds = s.deployment("chat").bounds()
    assert bounds.max_model_len.max == 131072
    assert bounds.gpu_memory_utilization.max == 0.90  # untouched default
    with pytest.raises(ConfigError, match="unknown deployment 'web' \\(known: chat\\)"):
        s.deployment("web")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe mode")
    with pytest.raises(ConfigError, match=r"bad.toml: not UTF-8 text \(byte 0xff at offset 0\)"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="a-folder: cannot read: Is a directory"):
        (tmp_path / "a-folder").mkdir()
        load_settings(tmp_path / "a-folder")
