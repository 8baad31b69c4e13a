"""The exit codes of every command: one table, shown by `selfheal --help` and in the README
(tests/cli/test_exit_codes.py checks both against each other and against real runs)."""
from __future__ import annotations

OK = 0            # done: healed, healthy, or the query answered
ERROR = 1         # the log, the config, a file or an id could not be used; verify found a break
USAGE = 2         # a malformed option or argument, or one that names nothing that exists
NOT_HEALED = 3    # heal or demo ended without a promotion: escalated, alerted, refused
FAILURE_FOUND = 4  # diagnose (or rules test) found a configuration failure in the excerpt
INTERRUPTED = 130  # SIGINT or SIGTERM, in every command (a watch finishes its step first, for 10 s at most)
CLOSED_PIPE = 141  # the reader of the output went away (`selfheal events | head -1`): no message

# click rewraps the epilog's paragraphs unless a paragraph starts with \b
TABLE = """\b
Exit codes (every command):
  0    done: healed, healthy, or the query answered
  1    error: the log, the config, a file or an id could not be used;
       verify found a break in the chain
  2    usage: a malformed option or argument, or one naming nothing that
       exists (an unknown event type, deployment, scenario or id)
  3    not healed: heal or demo ended without a promotion (escalated,
       alerted or refused); a healthy log or scenario is 0
  4    failure found: diagnose or rules test found a configuration failure
  130  interrupted: SIGINT or SIGTERM alike
  141  closed pipe: the reader went away (| head); nothing is printed"""
