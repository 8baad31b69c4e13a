"""The conventions every API function follows (see selfheal/api.py): how `db=` and
`config=` are found and opened, and how log content and files are given."""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path


from selfheal.eventstore.audit import default_db_path
from selfheal.eventstore.store import EventStore, is_server, open_store
from selfheal.schemas.config import ConfigError, Settings, load_settings
from selfheal.schemas.redaction import is_secret_name, known_secrets
from selfheal.schemas.serving import TUNABLE, ServingConfig
from selfheal.schemas.vllm_yaml import read_serving_values


CONFIG_ENV = "SELFHEAL_CONFIG"
NODE_ENV = "SELFHEAL_NODE"

Db = str | os.PathLike | EventStore | None
Config = str | os.PathLike | Settings | None
Clock = Callable[[], datetime]
LogContent = os.PathLike | bytes | bytearray | memoryview


def open_db(db: Db = None, *, create: bool = False, synchronous: str = "FULL") -> EventStore:
    """The event log `db` names, opened (a store is returned as it is); close it when done."""
    if isinstance(db, EventStore):
        return db
    # a postgresql:// URL stays a str (a Path would fold its '//')
    db = default_db_path() if db is None else db if is_server(db) else Path(db)
    return open_store(db, create=create, synchronous=synchronous)


def opened(db: Db, create: bool, synchronous: str,
           settings: Settings | None = None) -> contextlib.AbstractContextManager[EventStore]:
    """`db` for one call: a path is opened and closed after it; a store is left open. With
    `settings`, what the store records is redacted with the operator's patterns and the
    secrets the settings hold too (schemas/redaction.py)."""
    if isinstance(db, EventStore):
        store, context = db, contextlib.nullcontext(db)
    else:
        store = context = open_db(db, create=create, synchronous=synchronous)
    if settings is not None:
        # selfheal's own secret-named variables reach every canary and production it starts
        environment = [value for name, value in os.environ.items() if is_secret_name(name)]
        store.redact_with(settings.redaction.patterns, [*known_secrets(settings), *environment])
    return context


def load_config(config: Config = None) -> Settings:
    """The settings `config` names: a Settings as it is, a selfheal.toml path, or the default
    ($SELFHEAL_CONFIG, else ./selfheal.toml if present, else the built-in defaults)."""
    if isinstance(config, Settings):
        return config
    path = config if config is not None else os.environ.get(CONFIG_ENV)
    if path is None and Path("selfheal.toml").is_file():
        path = "selfheal.toml"
    return load_settings(path)


def chosen_node(node: str | None = None) -> str:
    """This fleet member's name, decided once at the edge and recorded in the runs its gate
    starts or refuses: `node`, else $SELFHEAL_NODE, else the hostname. Several `run --follow`
    processes on one log tell their runs apart by it (`history --node`)."""
    where = "node" if node is not None else f"${NODE_ENV}" if os.environ.get(NODE_ENV) is not None else "hostname"
    name = node if node is not None else os.environ.get(NODE_ENV)
    if name is None:
        name = socket.gethostname()
    if not name or not name.isprintable() or any(c.isspace() for c in name):
        raise ValueError(f"{where} {name!r}: a node name is one word of printable characters, e.g. gpu-node-1")
    return name


def chosen_deployment(settings: Settings, name: str | None) -> str:
    """The deployment `name` chooses (the only one, when None), checked against the settings."""
    if not settings.deployments:
        raise ConfigError("no deployments are configured: add a [deployments.NAME] table to selfheal.toml "
                          "(see README), or try `selfheal demo`")
    if name is None:
        if len(settings.deployments) > 1:
            raise ConfigError(f"several deployments are configured ({', '.join(sorted(settings.deployments))}): "
                              "choose one with --deployment")
        name = next(iter(settings.deployments))
    settings.deployment(name)
    return name


def log_content(function: str, log, text: str | None):
    """A log given to `function`: a file (os.PathLike), bytes, or text= (never a bare str)."""
    if isinstance(log, str):
        shown = repr(log) if len(log) <= 40 else f"{log[:40]!r}..."
        raise TypeError(f"{function}(): a str is ambiguous (a file name, or log text?): pass a log file as "
                        f"pathlib.Path({shown}) or the log's text as text=...")
    if (log is None) == (text is None):
        raise TypeError(f"{function}(): give the log as a path or bytes, or as text=..., and only one of them")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"{function}(): text= takes a str, not {type(text).__name__}")
        return text
    if not isinstance(log, (os.PathLike, bytes, bytearray, memoryview)):
        raise TypeError(f"{function}(): the log is a pathlib.Path, bytes or text=..., not {type(log).__name__}")
    return log


def paths_of(files: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Files as paths: one path (a str is a path here), or a list of them."""
    return [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(f) for f in files]


def as_config(current: ServingConfig | Mapping[str, float | bool] | None,
               config_file: str | os.PathLike | None) -> ServingConfig | None:
    if isinstance(current, ServingConfig):
        return current
    values = read_serving_values(config_file) if config_file else {}
    for key, value in (current or {}).items():
        if key not in TUNABLE:
            raise ValueError(f"current: {key!r} is not one of {', '.join(TUNABLE)}")
        values[key] = value
    if not values:
        return None
    ints = {"max_model_len", "max_num_seqs", "max_num_batched_tokens"}
    return ServingConfig(**{k: int(v) if k in ints else v for k, v in values.items()})

