"""Reading a vLLM config YAML (`vllm serve --config FILE`): one bounded loader for such files
(the commits and rollbacks of edges/vllm_config.py, `baseline import`, `diagnose --config`),
and the serving parameters a file sets.

vLLM accepts both spellings of a key (`max-model-len` and `max_model_len`); so does this.

A vLLM config is a short mapping of flags, a few of them small nested tables. PyYAML alone
would read a 10 GB file whole, recurse once per nesting level until Python's stack gives out,
and build a "billion laughs" (aliases of aliases) quickly as shared nodes that the first
comparison or dump then expands: 9^11 strings held the commit for minutes. So the loader
reads at most MAX_YAML_BYTES, and refuses nesting deeper than MAX_YAML_DEPTH, more than
MAX_YAML_ALIASES aliases, an alias inside its own anchor, and a document whose aliases expand
to more than MAX_YAML_NODES nodes, each with one ConfigError naming the file (and the line).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from selfheal.schemas.config import ConfigError
from selfheal.schemas.serving import TUNABLE

#: vLLM configs are a few KB. The pure-Python loader parses about 7 s per MiB on a busy 2-core
#: machine and a commit parses its file 4 times (existing, line edits, read-back twice), so
#: 64 KiB keeps a commit to about 2 s there
MAX_YAML_BYTES = 64 << 10
#: nesting levels (a flag's table of tables is 3 or 4); far below Python's recursion limit
MAX_YAML_DEPTH = 32
#: aliases in one document: sharing a block or two is common, hundreds is not a config
MAX_YAML_ALIASES = 100
#: nodes of the document with every alias expanded, as a comparison or a dump walks it
#: (100,000 of them through aliases take a commit about 0.2 s)
MAX_YAML_NODES = 100_000


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe, pure-Python loader (its marks index the text, which the line edits of
    edges/vllm_config.py rely on) with the limits above; `source` names the file in errors."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source = source
        self._depth = self._aliases = self._nodes = 0
        #: id(node) -> the nodes it expands to; absent while the node is being composed
        self._expanded: dict[int, int] = {}

    def _refuse(self, mark, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}:{mark.line + 1}:{mark.column + 1}: refused: {problem}")

    def _count(self, nodes: int, mark) -> None:
        self._nodes += nodes
        if self._nodes > MAX_YAML_NODES:
            raise self._refuse(mark, f"the document expands to more than {MAX_YAML_NODES:,} nodes through its "
                                     f"aliases; allowed: at most {MAX_YAML_NODES:,}")

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise self._refuse(mark, f"more than {MAX_YAML_ALIASES} aliases; allowed: at most {MAX_YAML_ALIASES}")
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:
                raise self._refuse(mark, "a recursive alias (it refers to a node that contains it)")
            self._count(self._expanded[id(node)], mark)
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise self._refuse(mark, f"nested deeper than {MAX_YAML_DEPTH} levels; allowed: at most {MAX_YAML_DEPTH}")
        before = self._nodes
        self._count(1, mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._expanded[id(node)] = self._nodes - before
        return node


def _checked_size(size: int, source: str) -> None:
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: refused: larger than {MAX_YAML_BYTES >> 10} KiB; allowed: at most "
                          f"{MAX_YAML_BYTES:,} bytes (a vLLM config is a few KB)")


def _bounded(text: str, source: str | os.PathLike, get):
    _checked_size(len(text), str(source))
    loader = BoundedLoader(text, str(source))
    try:
        return get(loader)
    finally:
        loader.dispose()


def load_yaml(text: str, source: str | os.PathLike) -> object:
    """The document in `text`, read within the limits. Limits raise ConfigError naming
    `source`; a syntax error raises yaml.YAMLError, for the caller to place."""
    return _bounded(text, source, BoundedLoader.get_single_data)


def compose_yaml(text: str, source: str | os.PathLike) -> yaml.Node | None:
    """The node tree of `text` (marks and styles, for line edits), within the same limits."""
    return _bounded(text, source, BoundedLoader.get_single_node)


def read_yaml_text(path: str | os.PathLike) -> str:
    """A YAML file's text, reading at most MAX_YAML_BYTES of it (ConfigError beyond).
    OSError and UnicodeDecodeError pass, for the caller to word."""
    with open(path, "rb") as f:
        data = f.read(MAX_YAML_BYTES + 1)
    _checked_size(len(data), str(path))
    # as Path.read_text reads it: universal newlines
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def read_serving_values(path: str | Path) -> dict:
    """The tunable parameters a vLLM YAML sets; other keys are left alone."""
    try:
        raw = load_yaml(read_yaml_text(path), path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a vLLM config must be a mapping of flag names to values, got {type(raw).__name__}")
    values = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name in TUNABLE:
            values[name] = _checked(path, key, name, value)
    return values


def _checked(path, key, name: str, value):
    """The value if its type fits the parameter; otherwise one error naming file and key."""
    if name == "enforce_eager":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: {key}: {value!r} is not allowed; allowed: true or false")
    if name == "gpu_memory_utilization":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= 1
        if ok:
            return float(value)
        raise ConfigError(f"{path}: {key}: {value!r} is not allowed; allowed: a number in (0, 1]")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigError(f"{path}: {key}: {value!r} is not allowed; allowed: a positive whole number")
