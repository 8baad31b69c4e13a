"""selfheal: event-sourced self-healing of vLLM serving configurations.

The library is the product: `selfheal.<command>` is the function behind each CLI command
(`selfheal.diagnose`, `selfheal.history`, `selfheal.rules_list` for `selfheal rules list`),
with the log as `db=` and the settings as `config=`. `selfheal/api.py` states the conventions.
"""
from selfheal.api import *  # noqa: F401,F403  (the API is the package's face)
from selfheal.api import __all__  # noqa: F401
