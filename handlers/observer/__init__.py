"""Observer: reads vLLM logs, recognises config failures, proposes bounded seed fixes.

Library code, no store; its only I/O is reading a log file given by path (logfile.py).
`diagnose(text)` is the entry point with the built-in rules; the rules are data (rules/*.toml,
read into a `RuleSet`), and another rule set (a candidate, one recorded in the log) diagnoses
the same way through `RuleSet.diagnose`.
"""
from selfheal.handlers.observer.diagnose import diagnose, format_diagnosis
from selfheal.handlers.observer.engine import Diagnosis, Finding
from selfheal.handlers.observer.rules import RuleFileError, RuleSet, builtin_ruleset, load_rule_file, parse_rules

__all__ = ["Finding", "Diagnosis", "diagnose", "format_diagnosis", "RuleSet", "RuleFileError",
           "builtin_ruleset", "load_rule_file", "parse_rules"]
