"""selfheal: event-sourced self-healing of vLLM serving configurations.

The library is the product: `selfheal.<command>` is the function behind each CLI command
(`selfheal.diagnose`, `selfheal.history`, `selfheal.rules_list` for `selfheal rules list`),
with the log as `db=` and the settings as `config=`. `selfheal/api.py` states the conventions
and holds the loop's commands; `selfheal/review.py` those that review and govern what the
loop did (queries, escrow, rules, replay, export).

The public names load on first use (PEP 562), not when the package is imported: every
`import selfheal.<anything>` imports this package first, and a process that needs only the
event vocabulary or the simulator (a canary server, a benchmark) should not pay for the
whole library. There is no cycle behind it: nothing below this package imports it.
"""
from __future__ import annotations

from importlib import import_module

#: the functions named after the CLI's commands, in the order of `selfheal --help`'s groups
COMMANDS = ["init", "events", "verify", "rebuild", "migrate", "diagnose", "observe", "run", "heal", "demo", "history", "state",
            "promotions", "intents", "show", "baseline", "baseline_import", "approve", "reject", "alerts",
            "supervise", "rules_list", "rules_test", "rules_propose", "rules_shadow", "rules_approve",
            "rules_promote", "verdict", "forget", "replay", "export", "ui"]

#: the commands of the log and the loop (selfheal/api.py); the others review it (selfheal/review.py)
_LOOP_COMMANDS = ("init", "events", "verify", "rebuild", "migrate", "diagnose", "observe", "run", "heal", "demo")

#: where each public name is defined
_HOMES = {
    **{name: "selfheal.api" for name in (*_LOOP_COMMANDS, "scenarios", "Observed", "Healed", "DEFAULT_SCENARIO")},
    **{name: "selfheal.review" for name in COMMANDS if name not in _LOOP_COMMANDS},
    "ui": "selfheal.browse", "run_picture": "selfheal.browse",
    "open_db": "selfheal.conventions", "load_config": "selfheal.conventions",
    "DemoResult": "selfheal.edges.demo", "RulesListing": "selfheal.handlers.rules_lifecycle",
    "typed": "selfheal.eventstore.store", "StoreError": "selfheal.eventstore.errors",
    "InputError": "selfheal.handlers.loop", "ConfigError": "selfheal.schemas.config",
}

__all__ = [*COMMANDS, "COMMANDS", "run_picture", "open_db", "load_config", "scenarios", "typed", "Observed", "Healed", "DemoResult",
           "RulesListing", "DEFAULT_SCENARIO", "ConfigError", "InputError", "StoreError"]


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'selfheal' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
