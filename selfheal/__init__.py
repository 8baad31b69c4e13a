"""selfheal: event-sourced self-healing of vLLM serving configurations.

The library is the product: `selfheal.<command>` is the function behind each CLI command
(`selfheal.diagnose`, `selfheal.history`, `selfheal.rules_list` for `selfheal rules list`),
with the log as `db=` and the settings as `config=`. `selfheal/api.py` states the conventions
and holds the loop's commands; `selfheal/review.py` those that review and govern what the
loop did (queries, escrow, rules, replay, export).
"""
from selfheal.api import (
    DEFAULT_SCENARIO, Healed, Observed, demo, diagnose, events, heal, init, observe, rebuild, run, scenarios, verify,
)
from selfheal.conventions import load_config, open_db
from selfheal.edges.demo import DemoResult
from selfheal.eventstore.errors import StoreError
from selfheal.eventstore.store import typed
from selfheal.handlers.loop import InputError
from selfheal.handlers.rules_lifecycle import RulesListing
from selfheal.review import (
    alerts, approve, baseline, baseline_import, export, history, intents, promotions, reject, replay, rules_approve,
    rules_list, rules_promote, rules_propose, rules_shadow, rules_test, show, state, supervise, verdict,
)
from selfheal.schemas.config import ConfigError

#: the functions named after the CLI's commands, in the order of `selfheal --help`'s groups
COMMANDS = ["init", "events", "verify", "rebuild", "diagnose", "observe", "run", "heal", "demo", "history", "state",
            "promotions", "intents", "show", "baseline", "baseline_import", "approve", "reject", "alerts",
            "supervise", "rules_list", "rules_test", "rules_propose", "rules_shadow", "rules_approve",
            "rules_promote", "verdict", "replay", "export"]

__all__ = [*COMMANDS, "COMMANDS", "open_db", "load_config", "scenarios", "typed", "Observed", "Healed", "DemoResult", "RulesListing",
           "DEFAULT_SCENARIO", "ConfigError", "InputError", "StoreError"]

