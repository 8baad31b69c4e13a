"""What every command shares: where the log and the config are, opened on first use."""
from __future__ import annotations

import os
from pathlib import Path

from selfheal.eventstore.audit import default_db_path
from selfheal.eventstore.store import EventStore, open_store
from selfheal.schemas.config import Settings, load_settings

CONFIG_ENV = "SELFHEAL_CONFIG"


class Context:
    def __init__(self, db_path: str | None, config_path: str | None, synchronous: str = "FULL"):
        self.db_path = Path(db_path) if db_path else default_db_path()
        self.config_path = config_path
        self.synchronous = synchronous
        self._settings: Settings | None = None

    def store(self, create: bool = False) -> EventStore:
        return open_store(self.db_path, create=create, synchronous=self.synchronous)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            path = self.config_path or os.environ.get(CONFIG_ENV)
            if path is None and Path("selfheal.toml").is_file():
                path = "selfheal.toml"
            self._settings = load_settings(path)
        return self._settings
