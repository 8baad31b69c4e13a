"""What every command shares: where the log and the config are, as the global options say."""
from __future__ import annotations

import os
from pathlib import Path

import selfheal
from selfheal.eventstore.audit import DB_ENV, default_db_path
from selfheal.eventstore.store import is_server
from selfheal.schemas.config import Settings


class Context:
    def __init__(self, db_path: str | None, config_path: str | None, synchronous: str = "FULL",
                 node: str | None = None):
        # a postgresql:// URL stays a str (a Path would fold its '//')
        self.db_path = (db_path if is_server(db_path) else Path(db_path)) if db_path else default_db_path()
        # whether the person chose the log (--db or $SELFHEAL_DB), or it is the default:
        # `demo` writes a chosen one, and a temp folder otherwise
        self.db_chosen = bool(db_path or os.environ.get(DB_ENV))
        self.config_path = config_path
        self.synchronous = synchronous
        #: --node; None leaves the choice to the API ($SELFHEAL_NODE, else the hostname)
        self.node = node
        self._settings: Settings | None = None

    @property
    def db(self) -> dict:
        """The log as every API function takes it: `selfheal.history(**ctx.db)`."""
        return {"db": self.db_path, "synchronous": self.synchronous}

    @property
    def settings(self) -> Settings:
        """The settings, read once per process ($SELFHEAL_CONFIG, ./selfheal.toml, defaults)."""
        if self._settings is None:
            self._settings = selfheal.load_config(self.config_path)
        return self._settings
