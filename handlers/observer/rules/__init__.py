"""The rules: the loader's API, and the built-in vLLM rules as data (the *.toml files here).

`builtin_ruleset()` reads the bundled files once; `load_rule_file` / `parse_rules` read
others (a candidate rule set, a rule set recorded in the log). The format is described in
README.md beside this file, the semantics in ../spec.py, the expression language in ../expr.py.
Nothing is compiled at import: `builtin_ruleset()` does it on first use.
"""
from selfheal.handlers.observer.loader import RuleFileError, builtin_rule_text, builtin_ruleset, load_rule_file, parse_rules
from selfheal.handlers.observer.ruleset import RuleSet
from selfheal.handlers.observer.spec import CONTEXT, KINDS, FixSpec, Number, Refinement, RuleProblem, RuleSpec

__all__ = ["CONTEXT", "KINDS", "FixSpec", "Number", "Refinement", "RuleFileError", "RuleProblem", "RuleSet",
           "RuleSpec", "builtin_rule_text", "builtin_ruleset", "load_rule_file", "parse_rules"]
