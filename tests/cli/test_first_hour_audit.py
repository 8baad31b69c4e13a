"""Issue 16, a second newcomer's first hour: what still surprised on a fresh clone after the
first round of fixes. Each test runs the installed `selfheal` as a subprocess, the way a
person meets it."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.cli.installed import SELFHEAL, clean_env, sh

ROOT = Path(__file__).resolve().parents[2]
CHAT = '[deployments.chat]\nscenario = "workstation-12gb-speech"\n'


def first_words_of_a_watch(cwd, args, stop, env=None):
    """The first line `observe ARGS` writes on standard error, and its exit code once `stop`
    ends it (sent after 15 s if no line came, so that a silent watch fails the test)."""
    proc = subprocess.Popen([SELFHEAL, "--db", cwd / "l.db", "observe", *args], cwd=cwd,
                            env=clean_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    late = threading.Timer(15, proc.send_signal, [stop])
    late.start()
    try:
        first = proc.stderr.readline()
    finally:
        late.cancel()
        proc.send_signal(stop)
        proc.wait(timeout=30)
    return first, proc.returncode


def test_a_demo_into_a_log_that_holds_events_prints_none_of_them(tmp_path, demo_log):
    # it used to print the whole old log as if the demo had run, then refuse
    for extra in ([], ["--json"]):
        proc = sh(tmp_path, "--db", demo_log[0], "demo", *extra)
        assert proc.returncode == 1 and proc.stdout == "", proc.stdout
        assert proc.stderr.startswith(f"selfheal: error: {demo_log[0]}: already holds events"), proc.stderr


@pytest.mark.parametrize("args", [["approve", "zz", "--by", "ana"], ["reject", "zz", "--by", "ana"],
                                  ["verdict", "zz", "--kind", "none", "--by", "ana"]])
def test_ids_that_name_nothing_are_usage_errors_in_every_command(tmp_path, demo_log, args):
    # the table says 2; approve, reject and verdict used to exit 1 where show and export exit 2
    proc = sh(tmp_path, "--db", demo_log[0], *args)
    assert proc.returncode == 2, proc.stderr
    assert "no promotion 'zz' in the log" in proc.stderr or "no incident 'zz' in the log" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, said", [(["--kind", "bogus", "--by", "ana"], "Invalid value for --kind: 'bogus': allowed: none, "),
                                        (["--kind", "none", "--by", " "], "Invalid value for --by: say who judges")])
def test_a_verdict_with_a_bad_kind_or_no_judge_is_a_usage_error(tmp_path, demo_log, args, said):
    incident = sh(tmp_path, "--db", demo_log[0], "history", "--json").stdout.split('"correlation_id":"')[1][:8]
    proc = sh(tmp_path, "--db", demo_log[0], "verdict", incident, *args)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr  # both used to exit 1


def test_a_settled_promotion_is_refused_in_words(tmp_path, demo_log):
    promotion = sh(tmp_path, "--db", demo_log[0], "promotions", "--all").stdout.split()[0]
    proc = sh(tmp_path, "--db", demo_log[0], "reject", promotion, "--by", "ana")
    assert proc.returncode == 1
    assert "nothing to reject, it no longer waits for a decision (status: not committed)" in proc.stderr, proc.stderr
    assert "already not committed" not in proc.stderr


@pytest.mark.parametrize("command", [["heal"], ["observe"]])
def test_an_unknown_deployment_is_a_usage_error_naming_those_configured(tmp_path, command):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "empty.log").write_text("")  # observe used to skip an empty file before the name was checked
    proc = sh(tmp_path, "--db", tmp_path / "l.db", *command, "--deployment", "nosuch", "empty.log")
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value for --deployment: no deployment 'nosuch'; known: chat" in proc.stderr


def test_following_a_directory_is_an_error_at_once(tmp_path):
    # it used to print a thread's traceback and exit 0
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "logs").mkdir()
    proc = sh(tmp_path, "--db", tmp_path / "l.db", "observe", "--follow", "logs", timeout=30)
    assert (proc.returncode, proc.stderr) == (1, "selfheal: error: logs: cannot follow: it is a directory\n")


def test_heal_records_nothing_from_an_empty_input_and_says_so(tmp_path):
    # it used to record an empty incident ("1 lines from file") and exit 0 as if healthy
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "empty.log").write_text("")
    for args, name in ((["empty.log"], "empty.log"), (["-"], "standard input")):
        proc = sh(tmp_path, "--db", tmp_path / "l.db", "heal", *args, input="")
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr == (f"selfheal: nothing recorded from {name}: it is empty\n"
                               "selfheal: nothing to heal: every input was empty\n")
    assert not (tmp_path / "l.db").exists()


def test_diagnose_says_when_there_was_nothing_to_read(tmp_path):
    (tmp_path / "empty.log").write_text("")
    for args, name in ((["empty.log"], "empty.log"), (["-"], "standard input"), ([], "standard input")):
        proc = sh(tmp_path, "diagnose", *args, input="")
        assert proc.returncode == 0 and proc.stdout == "No configuration failure found.\n"
        assert proc.stderr == f"selfheal: nothing to diagnose: {name} is empty\n"


@pytest.mark.parametrize("args", [["rules", "propose", "nosuch.toml"], ["replay", "--bundle", "nosuch.toml"]])
def test_a_missing_file_is_named_without_pythons_words(tmp_path, args):
    proc = sh(tmp_path, "--db", tmp_path / "l.db", *args)
    assert (proc.returncode, proc.stderr) == (1, "selfheal: error: nosuch.toml: No such file or directory\n")


def test_a_refused_run_and_a_one_line_incident_read_right(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "one.log").write_text(
        "ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device cuda:0 (8.41/11.66 GiB) on startup is "
        "less than desired GPU memory utilization (0.9, 10.49 GiB). Decrease GPU memory utilization or reduce GPU "
        "memory used by other processes.\n")
    first = sh(tmp_path, "--db", tmp_path / "l.db", "heal", "one.log")
    assert first.returncode == 0 and "chat: 1 line from file" in first.stdout, first.stdout  # not "1 lines"
    again = sh(tmp_path, "--db", tmp_path / "l.db", "heal", "--force", "one.log")  # inside the 6 h cooldown
    (refused,) = [line for line in again.stdout.splitlines() if "RunRefused" in line]
    # the next allowed time in the log's one spelling, not Python's isoformat (+00:00)
    assert re.search(r"; next allowed \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", refused), refused


def test_a_config_file_named_but_missing_is_an_error_in_every_command(tmp_path, demo_log):
    # `events` and the other commands that read no config used to ignore it in silence
    for args in (["events", "--limit", "1"], ["history"], ["state"]):
        proc = sh(tmp_path, "--db", demo_log[0], "--config", "nosuch.toml", *args)
        assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "selfheal: error: nosuch.toml: no such config file\n")


# -- the README's examples are real output of the current code -----------------------------------

def _readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```\n", text.index(after)) + 4
    return text[start:text.index("```\n", start)]


def _shape(text: str) -> str:
    """Output with what differs from run to run (times, short ids, the temp folder) made equal."""
    text = re.sub(r"\S*/selfheal-demo-([\w-]+?)-[^/\s]+/selfheal\.db", r"<temp>/\1/selfheal.db", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", "<time>", text)
    return re.sub(r"\b[0-9a-f]{8}\b", "<id>", text)


def test_the_readmes_demo_transcript_is_what_demo_prints(tmp_path):
    shown = _readme_block("## What `selfheal demo` shows")
    proc = sh(tmp_path, "demo", env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert _shape(proc.stdout).splitlines() == _shape(shown).splitlines()


@pytest.mark.parametrize("after", ["A config error names the file", "`diagnose` reads one excerpt"])
def test_the_readmes_config_error_and_diagnose_examples_are_real_output(tmp_path, after):
    block = _readme_block(after)
    made = re.match(r"\$ cat (\S+)\n(.*?)\$ selfheal (.*?)\n(.*)", block, re.S)
    assert made, f"README's example after {after!r} lost its `$ cat FILE` and `$ selfheal ...` lines"
    name, content, command, expected = made.groups()
    (tmp_path / name).write_text(content)
    proc = sh(tmp_path, *command.split())
    assert proc.stdout + proc.stderr == expected


def _commands(args=()):
    """Every command path of `selfheal --help`, read from the installed command's own help."""
    shown = sh(ROOT, *args, "--help").stdout
    names = re.findall(r"^  ([a-z][\w-]*)  ", shown.split("Commands:\n", 1)[1].split("\n\n", 1)[0], re.M) \
        if "Commands:\n" in shown else []
    for name in names:
        sub = [*args, name]
        inner = list(_commands(sub))
        yield from inner or [sub]


def test_every_option_of_every_command_says_what_it_does():
    # --limit, --note, --status, verify's and rebuild's --json ... showed no words, --limit an
    # IntRange of 0 to 9223372036854775807
    paths = list(_commands())
    assert len(paths) > 25 and ["rules", "list"] in paths
    for path in paths:
        shown = sh(ROOT, *path, "--help").stdout
        options = shown.split("Options:\n", 1)[1]
        bare = re.findall(r"^  (--?[\w-]+(?: [A-Z_]+| \[[^\]]+\])?)\s*$", options, re.M)
        assert not bare, f"selfheal {' '.join(path)} --help: options with no words: {bare}"
        assert "9223372036854775807" not in shown


@pytest.mark.parametrize("option", ["--after", "--limit"])
def test_counts_are_refused_in_words(tmp_path, demo_log, option):
    bad = sh(tmp_path, "--db", demo_log[0], "events", option, "x")
    assert bad.returncode == 2 and f"Invalid value for '{option}': 'x' is not a whole number (0 or more)" in bad.stderr
    huge = sh(tmp_path, "--db", demo_log[0], "events", option, "9" * 30)
    assert huge.returncode == 2 and "no log holds a position that large" in huge.stderr, huge.stderr


def test_rules_list_without_a_log_lists_the_builtin_rules_and_creates_nothing(tmp_path):
    proc = sh(tmp_path, "--db", tmp_path / "none.db", "rules", "list")
    assert proc.returncode == 0 and proc.stdout.startswith("active: builtin (builtin-"), proc.stderr
    assert list(tmp_path.iterdir()) == []  # it used to leave a fresh none.db behind


def test_state_at_a_past_moment_does_not_say_now(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    sh(tmp_path, "--db", tmp_path / "l.db", "init")
    past = sh(tmp_path, "--db", tmp_path / "l.db", "state", "--at", "yesterday").stdout
    assert past == "chat: 0/3 runs in 24 h, 0 failed in a row; next run allowed at that time\n"
    assert sh(tmp_path, "--db", tmp_path / "l.db", "state").stdout.endswith("next run allowed now\n")


@pytest.mark.parametrize("args, option", [(["rules", "shadow", "nosuch"], "CANDIDATE"),
                                          (["rules", "promote", "nosuch", "--by", "ana"], "CANDIDATE"),
                                          (["replay", "--rules", "nosuch"], "--rules"),
                                          (["replay", "--set", "bogus=1"], "--set"),
                                          (["replay", "--set", "rate_limit.runs"], "--set")])
def test_rule_sets_and_what_ifs_that_name_nothing_are_usage_errors(tmp_path, demo_log, args, option):
    proc = sh(tmp_path, "--db", demo_log[0], *args)  # each used to exit 1
    assert proc.returncode == 2 and f"Invalid value for {option}: " in proc.stderr, proc.stderr


def test_a_proposed_rule_set_is_found_by_a_prefix_of_its_digest(tmp_path, demo_log):
    db = tmp_path / "copy.db"
    db.write_bytes(demo_log[0].read_bytes())
    rules = next((ROOT / "handlers" / "observer" / "rules").glob("*.toml"))
    proposed = sh(tmp_path, "--db", db, "rules", "propose", rules)
    assert proposed.returncode == 0, proposed.stderr
    digest = proposed.stdout.split()[1].removeprefix("sha256:")
    shadow = sh(tmp_path, "--db", db, "rules", "shadow", digest[:6])
    assert shadow.returncode == 0 and shadow.stdout.startswith("3 incidents: "), shadow.stderr


def test_following_a_journal_where_systemd_cannot_answer_says_so_at_once(tmp_path):
    # a container without systemd: `systemctl show` fails and journalctl waits; the watch
    # used to wait in silence. Stand-ins answer as such a host's commands do.
    (tmp_path / "selfheal.toml").write_text(CHAT)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "systemctl").write_text("#!/bin/sh\necho 'System has not been booted with systemd as init system "
                                    "(PID 1). Can'\"'\"'t operate.' >&2\nexit 1\n")
    (bin_ / "journalctl").write_text("#!/bin/sh\nexec sleep 60\n")
    for tool in bin_.iterdir():
        tool.chmod(0o755)
    first, code = first_words_of_a_watch(tmp_path, ["--journal", "vllm.service"], signal.SIGINT,
                                         {"PATH": f"{bin_}:{os.environ['PATH']}"})
    assert first == ("selfheal: warning: systemd cannot say whether unit 'vllm.service' exists (System has not been "
                     "booted with systemd as init system (PID 1). Can't operate.); following its journal anyway\n")
    assert code == 130


def test_csv_and_table_cells_are_spelled_as_json_not_python(tmp_path, demo_log):
    # promotions' config cell was a repr (ServingConfig(gpu_memory_utilization=0.65, ...)), its flag True
    out = sh(tmp_path, "--db", demo_log[0], "promotions", "--all", "--csv").stdout
    header, row = out.splitlines()
    assert header == "promotion_id,deployment,status,fitness,simulated,config"
    assert ",true," in row and '"{""gpu_memory_utilization"":0.65,' in row and "ServingConfig" not in row, row
    table = sh(tmp_path, "--db", demo_log[0], "promotions", "--all", "--table").stdout
    assert "True" not in table and '{"gpu_memory_utilization":0.65' in table


def test_show_svg_into_a_missing_folder_names_the_file_given(tmp_path, demo_log):
    run = sh(tmp_path, "--db", demo_log[0], "history").stdout.split()[1]
    proc = sh(tmp_path, "--db", demo_log[0], "show", run, "--svg", tmp_path / "nosuch" / "run.svg")
    # click's hidden temp file (.__atomic-write...) was named instead
    assert (proc.returncode, proc.stderr) == (1, f"selfheal: error: {tmp_path / 'nosuch' / 'run.svg'}: "
                                                 "No such file or directory\n")


def test_migrate_keeps_the_exit_code_table(tmp_path, demo_log):
    missing = sh(tmp_path, "migrate", "--from", "nosuch.db", "--to", "postgresql://u@127.0.0.1:1/x")
    assert (missing.returncode, missing.stderr) == (1, "selfheal: error: nosuch.db: No such file or directory\n")
    malformed = sh(tmp_path, "migrate", "--from", demo_log[0], "--to", "notaurl")
    assert malformed.returncode == 2 and "Invalid value for --to: 'notaurl': give a postgresql:// URL" in malformed.stderr


def test_a_prod_heal_says_the_promotion_waits_and_run_sums_up_last(tmp_path):
    (tmp_path / "selfheal.toml").write_text('mode = "prod"\n' + CHAT)
    (tmp_path / "vllm.log").write_text(
        "ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device cuda:0 (8.41/11.66 GiB) on startup is "
        "less than desired GPU memory utilization (0.9, 10.49 GiB). Decrease GPU memory utilization or reduce GPU "
        "memory used by other processes.\n")
    healed = sh(tmp_path, "--db", "p.db", "heal", "vllm.log")
    (waiting,) = json.loads(sh(tmp_path, "--db", "p.db", "promotions", "--json").stdout)
    # it read "outcome: promoted." alone, though nothing is written before an approval
    assert re.fullmatch(rf"outcome: promoted \(waiting for approval: selfheal --db p\.db approve "
                        rf"{waiting['promotion_id'][:8]} --by NAME\)\. Explore it: selfheal --db p\.db show \w{{8}}",
                        healed.stdout.splitlines()[-1]), healed.stdout
    assert sh(tmp_path, "--db", "p.db", "approve", waiting["promotion_id"][:8], "--by", "ana").returncode == 0
    ran = sh(tmp_path, "--db", "p.db", "run").stdout.splitlines()
    # the summary came before the event lines it sums up
    assert "PromotionNotCommitted" in ran[0] and ran[-1] == "handled 1 event, recorded 1, log at 25", ran


def test_observe_names_standard_input_in_words(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    proc = sh(tmp_path, "--db", "l.db", "observe", "-", input="INFO 11-24 06:55:12 [api_server.py:1] started\n")
    assert proc.returncode == 0 and re.fullmatch(r"standard input: incident [0-9a-f-]{36}\n", proc.stdout), proc.stdout


def test_following_a_file_that_is_not_there_yet_says_so(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    first, code = first_words_of_a_watch(tmp_path, ["--follow", "later.log"], signal.SIGTERM)
    assert first == "selfheal: later.log does not exist yet: following it from when it appears\n"
    assert code == 130


@pytest.mark.parametrize("args", [["--db", "adir", "events"], ["--config", "adir", "events"],
                                  ["rules", "test", "adir", "x.log"], ["replay", "--bundle", "adir"],
                                  ["demo", "--out", "adir"], ["export", "abc", "-o", "adir"],
                                  ["diagnose", "-", "--vllm-config", "adir"]])
def test_a_folder_where_a_file_is_expected_is_exit_1_in_every_command(tmp_path, args):
    # click's Path(dir_okay=False) made it a usage error (2) while a folder given as a log was 1
    (tmp_path / "adir").mkdir()
    proc = sh(tmp_path, *args, input="")
    assert (proc.returncode, proc.stderr) == (1, "selfheal: error: adir: Is a directory\n")
