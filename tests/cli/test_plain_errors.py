"""Issue 16: an error names what and where in words, not in Python's (found by the newcomer audit
after the first round): a config file that is not UTF-8, a scenario file missing a top-level key,
a metrics endpoint that refuses the connection. The installed `selfheal`, as a person runs it."""
from __future__ import annotations

import signal
import subprocess
import urllib.error

from selfheal.edges.metrics_watch import scrape_error
from tests.cli.installed import SELFHEAL, clean_env, sh

LEAKS = ("codec", "Error:", "Object missing", "Errno", "Traceback", "<urlopen")


def test_a_config_file_that_is_not_utf8_is_named_with_the_byte(tmp_path):
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe [deployments]")
    out = sh(tmp_path, "--db", tmp_path / "l.db", "--config", "bad.toml", "state")
    assert out.returncode == 1
    assert out.stderr.strip() == ("selfheal: error: bad.toml: not UTF-8 text (byte 0xff at offset 0); "
                                  "selfheal.toml is TOML, which is UTF-8"), out.stderr


def test_a_scenario_file_missing_a_top_level_key_is_one_line_before_anything_is_printed(tmp_path):
    (tmp_path / "mine.toml").write_text("")
    out = sh(tmp_path, "demo", "--scenario", "./mine.toml")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == "selfheal: error: scenario file mine.toml: key 'name': missing required key"


def test_a_refused_scrape_says_so_in_words(tmp_path):
    refused = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    assert scrape_error(refused, 5) == "connection refused"
    assert scrape_error(urllib.error.URLError(TimeoutError("timed out")), 5) == "no answer within 5 s"
    (tmp_path / "selfheal.toml").write_text('[deployments.chat]\nscenario = "workstation-12gb-speech"\n')
    proc = subprocess.Popen([SELFHEAL, "--db", tmp_path / "l.db", "observe", "--deployment", "chat", "--metrics",
                             "http://127.0.0.1:9/metrics"], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    try:
        first = proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert first.rstrip().endswith("scrape of http://127.0.0.1:9/metrics failed (1 so far): connection refused"), first
    assert not any(leak in first for leak in LEAKS), first


def test_demo_of_a_healthy_scenario_exits_0_as_heal_of_a_healthy_log_does(tmp_path):
    out = sh(tmp_path, "--db", tmp_path / "h.db", "demo", "--scenario", "a100-40-qwen32b-awq-healthy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "outcome: no failure found" in out.stdout
