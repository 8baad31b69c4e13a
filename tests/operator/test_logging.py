"""Issue 18.2: selfheal's own log lines, configured once, and systemd's notify protocol."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

from tests.operator.conftest import SELFHEAL, free_port, json_lines, scrape, selfheal, until
from tests.operator.test_metrics import configured


def test_json_lines_carry_time_level_and_the_events_ids(tmp_path, service):
    db = tmp_path / "s.db"
    config, log = configured(tmp_path)
    port = free_port()
    s = service("--db", str(db), "--config", str(config), "--log-format", "json", "--log-level", "info",
                "run", "--follow", "--interval", "0.2", "--metrics-port", str(port))
    until(lambda: "selfheal_events_total" in scrape(port), "the service")
    assert selfheal("--db", str(db), "--config", str(config), "observe", str(log)).returncode == 0
    until(lambda: "IntentArchived" in s.err_path.read_text(), "the run's last event in the log lines")
    code, err = s.stop()
    lines = json_lines(err)
    assert lines and all(set(line) >= {"time", "level", "logger", "message", "deployment", "run_id", "incident_id"}
                         for line in lines), err
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)
    captured = next(line for line in lines if line["message"].startswith("IncidentCaptured"))
    assert captured["level"] == "info" and captured["deployment"] == "chat" and captured["incident_id"]
    started = next(line for line in lines if line["message"].startswith("RunStarted"))
    assert started["run_id"] and started["deployment"] == "chat"
    # a canary's events name only their run: their lines still carry the run's deployment
    of_run = [line for line in lines if line["run_id"]]
    assert {line["message"].split()[0] for line in of_run} >= {"CanaryStarted", "CanaryCompleted", "CandidateScored"}
    assert all(line["deployment"] == "chat" for line in of_run), [l for l in of_run if l["deployment"] != "chat"]
    # each event's line says what the timelines say of it, not only its type
    completed = next(line for line in lines if line["message"].startswith("CanaryCompleted"))
    assert re.fullmatch(r"CanaryCompleted at position \d+: canary (ok|failed) .+", completed["message"]), completed
    # every line of stderr is a JSON object, the last word on SIGTERM too
    assert all(line.startswith("{") for line in err.splitlines()), err
    assert lines[-1]["message"] == "interrupted" and lines[-1]["level"] == "info"


def test_info_logs_each_new_event_without_a_metrics_port(tmp_path, service):
    db = tmp_path / "s.db"
    config, log = configured(tmp_path)
    assert selfheal("--db", str(db), "init").returncode == 0
    s = service("--db", str(db), "--config", str(config), "--log-format", "json", "--log-level", "info",
                "run", "--follow", "--interval", "0.2")
    assert selfheal("--db", str(db), "--config", str(config), "observe", str(log)).returncode == 0
    until(lambda: "RunFinished" in s.err_path.read_text(), "the run's events in the log lines")
    code, err = s.stop()
    assert code == 130 and any(line["message"].startswith("RunStarted") for line in json_lines(err)), err


def test_an_error_is_a_json_line_in_json_and_filed_as_an_error_under_journald(tmp_path):
    missing = str(tmp_path / "none.db")
    out = selfheal("--db", missing, "--log-format", "json", "history")
    assert out.returncode == 1, out.stderr
    (line,) = json_lines(out.stderr)
    assert out.stderr.count("\n") == 1 and line["level"] == "error" and line["logger"] == "selfheal.cli"
    assert line["message"].startswith(f"{missing}: does not exist"), line
    err = tmp_path / "stderr"
    with err.open("w") as f:
        st = os.fstat(f.fileno())
        done = subprocess.run([SELFHEAL, "--db", missing, "history"], stderr=f, stdout=subprocess.DEVNULL,
                              env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, timeout=60)
    assert done.returncode == 1
    assert err.read_text().startswith(f"<3>selfheal: error: {missing}: does not exist"), err.read_text()


def test_the_default_is_warnings_only_as_text(tmp_path, service):
    port = free_port()
    s = service("--db", str(tmp_path / "s.db"), "run", "--follow", "--metrics-port", str(port))
    until(lambda: "selfheal_events_total" in scrape(port), "the service")
    _, err = s.stop()
    lines = err.strip().splitlines()
    assert lines[-1] == "selfheal: interrupted" and " INFO " not in err  # info lines are not shown by default
    # the follower may have looked before `run` created the log: that warning, as a text line
    for line in lines[:-1]:
        assert re.fullmatch(r"\S+Z WARNING selfheal\.edges\.metrics_server: cannot read the log for metrics: .*"
                            r"does not exist.*", line), line


def test_under_journald_each_text_line_starts_with_its_priority(tmp_path):
    # journald files a line by its `<N>` prefix when stderr is the stream $JOURNAL_STREAM names
    port = free_port()
    err = tmp_path / "stderr"
    with err.open("w") as f:
        st = os.fstat(f.fileno())
        proc = subprocess.Popen([SELFHEAL, "--db", str(tmp_path / "s.db"), "--log-level", "info", "run", "--follow",
                                 "--metrics-port", str(port)], stdout=subprocess.DEVNULL, stderr=f,
                                env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        try:
            until(lambda: "serving metrics" in err.read_text(), "the service's first line")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    first = err.read_text().splitlines()[0]
    assert re.fullmatch(r"<6>\S+Z INFO selfheal\.edges\.metrics_server: serving metrics on http://127\.0\.0\.1:\d+/metrics",
                        first), first


def test_a_bad_log_format_in_the_environment_is_one_clear_error(tmp_path):
    out = selfheal("--db", str(tmp_path / "s.db"), "history", env={"SELFHEAL_LOG_FORMAT": "xml"})
    assert out.returncode == 2, out.stderr
    assert "SELFHEAL_LOG_FORMAT" in out.stderr and "'xml' is not one of text, json" in out.stderr
    assert "Traceback" not in out.stderr


def test_systemd_notify_ready_watchdog_and_stopping_over_a_real_socket(tmp_path, service):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        s = service("--db", str(tmp_path / "s.db"), "run", "--follow", "--interval", "0.1",
                    env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        ready = sock.recv(4096).decode().split("\n")
        assert "READY=1" in ready and any(f.startswith("STATUS=selfheal run: watching") for f in ready), ready
        assert f"MAINPID={s.proc.pid}" in ready
        pings = [sock.recv(4096).decode() for _ in range(3)]  # every 0.2 s: half the watchdog period
        assert pings == ["WATCHDOG=1"] * 3
        code, err = s.stop()
        rest = []
        while True:
            try:
                rest.append(sock.recv(4096).decode())
            except TimeoutError:
                break
            if rest[-1].startswith("STOPPING=1"):
                break
    assert code == 130, err
    assert rest[-1].split("\n")[0] == "STOPPING=1"


def test_an_alert_is_a_warning_line_and_one_no_sink_took_an_error(tmp_path, service):
    """At the default level (warnings): what a person must see leaves in the journal, with its
    deployment, and is not counted again as one of selfheal's own faults."""
    from selfheal.edges.sim import load_scenario, simulate
    db, config, log = tmp_path / "s.db", tmp_path / "selfheal.toml", tmp_path / "vllm.log"
    closed = free_port()  # nothing listens there: the webhook's delivery fails
    config.write_text(f'[deployments.hope]\nscenario = "no-safe-fix"\nalerts = [{{type = "webhook", '
                      f'url = "http://127.0.0.1:{closed}/hook", retries = 0}}]\n')
    log.write_text(simulate(load_scenario("no-safe-fix")).log_text)  # weights exceed the card: escalate
    assert selfheal("--db", str(db), "init").returncode == 0
    port = free_port()
    s = service("--db", str(db), "--config", str(config), "--log-format", "json", "run", "--follow",
                "--interval", "0.2", "--metrics-port", str(port))
    assert selfheal("--db", str(db), "--config", str(config), "observe", str(log)).returncode == 0
    until(lambda: "AlertDelivered" in s.err_path.read_text(), "the failed delivery's line")
    text = until(lambda: 'result="failed"' in (m := scrape(port)) and m, "the failed delivery's count")
    code, err = s.stop()
    lines = {line["message"].split()[0]: line for line in json_lines(err)}
    raised, delivered = lines["AlertRaised"], lines["AlertDelivered"]
    assert raised["level"] == "warning" and raised["deployment"] == "hope" and "ALERT escalation" in raised["message"]
    assert delivered["level"] == "error" and delivered["deployment"] == "hope" and "FAILED" in delivered["message"]
    assert 'selfheal_alert_deliveries_total{result="failed",sink="webhook:0"} 1.0' in text
    assert "selfheal_log_messages_total{" not in text, text  # counted by its own family, not as a fault


def test_a_python_warning_is_a_log_line_in_the_chosen_format():
    """A library's warning (here one raised on purpose) is not bare text on stderr."""
    code = ("from selfheal.cli.logging_setup import configure; import warnings; configure({fmt!r}); "
            "warnings.warn('an old keyword', DeprecationWarning)")
    for fmt in ("json", "text"):
        done = subprocess.run([sys.executable, "-W", "always", "-c", code.format(fmt=fmt)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if fmt == "json":
            (line,) = json_lines(done.stderr)
            assert (line["level"], line["logger"]) == ("warning", "py.warnings"), line
            assert "DeprecationWarning: an old keyword" in line["message"]
        else:
            assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z WARNING py\.warnings: .*DeprecationWarning: an old keyword",
                            done.stderr), done.stderr
