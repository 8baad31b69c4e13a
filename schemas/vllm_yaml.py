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

`round_trip_set` edits a file through ruamel.yaml's round trip, which keeps what PyYAML drops
(comments, anchors, flow style, quoting, key order); edges/vllm_config.py uses it for the
files its byte-exact line edits cannot handle. It trusts its input to have passed the bounded
loader first: ruamel.yaml has no limits of its own.
"""
from __future__ import annotations

import copy
import io
import math
import os
import re
from collections import Counter
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError as RuamelYAMLError
from ruamel.yaml.comments import CommentedBase, CommentedMap, CommentedSeq
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tokens import CommentToken

from selfheal.schemas.config import ConfigError
from selfheal.schemas.serving import TUNABLE

#: vLLM configs are a few KB. The pure-Python loader parses about 7 s per MiB on a busy 2-core
#: machine and a commit parses its file 4 times (existing, line edits, read-back twice; ruamel.yaml's
#: round trip once more, at about the same speed, where line edits do not do), so 64 KiB keeps
#: a commit to about 2 s there
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


# --- editing with the operator's formatting kept -----------------------------------------------

class _TextOnly(VersionedResolver):
    """No implicit types: every plain scalar is read as its text and written back as that text.
    ruamel.yaml reads YAML 1.2 and PyYAML (so vLLM) YAML 1.1, which differ on `yes`, `010`,
    `1e3`, `1:20`...; and ruamel.yaml rebuilds a float's text from the digits it kept, which
    can lose the last one. Kept as text, a value reads back in PyYAML as it read before.
    Only an empty value is typed, as null, so that it is written back empty, not as ''."""

    @property
    def versioned_resolver(self) -> dict:
        # but an empty value is null, not '' (`resolve` extends the lists: a new one each time)
        return {"": [("tag:yaml.org,2002:null", re.compile("^$"))]}


def _round_trip_yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True       # 'x' stays 'x'
    y.allow_duplicate_keys = True  # PyYAML accepts them (the last wins), so vLLM does too
    y.width = 1 << 16              # never re-wrap the operator's long lines
    y.Resolver = _TextOnly
    return y


_COMMENT_LINES = r"(?:[ \t]*(?:#[^\n]*)?\n)*"


def _kept_around(text: str, rendered: str) -> str:
    """`rendered` with the comment lines above and below the original document put back where
    ruamel.yaml dropped them (it does around a flow-style root, and after a `...` end)."""
    lead = re.match(_COMMENT_LINES, text).group(0)
    tail = re.search(r"\n(" + _COMMENT_LINES + r"[ \t]*(?:#[^\n]*)?)\Z", text)
    tail = tail.group(1) if tail else ""
    def dropped(block: str) -> bool:
        comments = [line.strip() for line in block.splitlines() if line.strip()]
        return bool(comments) and not any(c in rendered for c in comments)
    if dropped(lead):
        rendered = lead + rendered
    if dropped(tail):
        rendered += tail if tail.endswith("\n") else tail + "\n"
    return rendered


def _indents(text: str) -> tuple[int, int, int]:
    """The file's (mapping, sequence, offset) indents as ruamel.yaml's `indent()` takes them,
    guessed from the first nested mapping and the first nested block sequence (2, 2, 0 where
    the file has none: ruamel.yaml's defaults)."""
    mapping = dash = content = None
    opener = None  # the indentation of a `key:` line whose value is on the next lines
    for line in text.splitlines():
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        col = len(line) - len(line.lstrip(" "))
        if opener is not None and (col > opener or (col == opener and body.startswith("- "))):
            if body.startswith("- ") and dash is None:
                dash = col - opener
                content = dash + 2 + len(body[2:]) - len(body[2:].lstrip(" "))
            elif not body.startswith("-") and mapping is None:
                mapping = col - opener
        opener = col if not body.startswith("-") and re.search(r":[ \t]*(?:#.*)?$", body) else None
    return mapping or 2, content or mapping or 2, dash or 0


def _move_eol_comments_back(node: CommentedMap) -> None:
    """ruamel.yaml reads the end-of-line comment after an alias (`key: *a  # why`) as a comment
    above the next key (or at the mapping's end); it is put back at the end of the alias's line."""
    keys = list(node)
    for i, before in enumerate(keys):
        if i + 1 < len(keys):
            slots = node.ca.items.get(keys[i + 1])
            above = slots[1] if slots and isinstance(slots[1], list) else None
        else:  # after the last key: the mapping's end comments
            above = node.ca.end
        if not above or not isinstance(above[0], CommentToken):
            continue
        if before in node.lc.data and above[0].start_mark.line == node.lc.data[before][0]:  # not appended
            mine = node.ca.items.setdefault(before, [None, None, None, None])
            if mine[2] is None:
                mine[2] = above.pop(0)


def _drop_orphaned_copies(data: CommentedMap) -> None:
    """ruamel.yaml gives every key whose value is an alias the anchored value's end-of-line
    comment, the same token (the node is shared, and it writes the comment once, on the
    anchor's line). Once the anchor's key is given a new value, an alias key holds the node
    alone and would write that comment a second time: its copy is dropped."""
    def eol(key):
        slots = data.ca.items.get(key)
        return slots[2] if slots and isinstance(slots[2], CommentToken) else None
    holders = Counter(id(eol(key)) for key in data if eol(key) is not None)
    uses = Counter(id(value) for value in data.values())
    for key, value in data.items():
        token = eol(key)
        if (token is not None and holders[id(token)] > 1 and uses[id(value)] == 1
                and token.start_mark.line != data.lc.data.get(key, [-1])[0]):
            data.ca.items[key][2] = None


def _tail_comment(node: object) -> tuple[list, int] | None:
    """Where ruamel.yaml keeps the comment lines after a block's last line: the end-of-line slot
    of its last item, in the deepest block that ends there."""
    while True:
        if isinstance(node, CommentedMap) and node:
            last, index = list(node)[-1], 2
        elif isinstance(node, CommentedSeq) and node:
            last, index = len(node) - 1, 0
        else:
            return None
        value = node[last]
        if isinstance(value, (CommentedMap, CommentedSeq)) and value and not value.fa.flow_style():
            node = value
            continue
        slots = node.ca.items.get(last)
        return (slots, index) if slots and isinstance(slots[index], CommentToken) else None


def _detach_closing_comments(data: CommentedMap) -> CommentToken | None:
    """The comment lines that close the file, taken off the item they follow (its own end-of-
    line comment stays), so that keys appended after it do not land below them."""
    tail = _tail_comment(data)
    if tail is None:
        return None
    slots, index = tail
    token = slots[index]
    eol, _, rest = token.value.partition("\n")
    if not rest.strip():
        return None
    closing = copy.copy(token)
    closing.value = "\n" + rest
    if eol.strip():
        token.value = eol + "\n"
    else:
        slots[index] = None
    return closing


def round_trip_set(text: str, values: dict[str, object], spell) -> str | None:
    """`text` with each top-level key in `values` set, in every spelling the file uses (`spell`
    maps a key to its name in `values`, or None), and the missing ones appended as `dashed`
    keys, through ruamel.yaml's round trip: comments, anchors and aliases, flow style, block
    scalars, quoting and key order survive. Blank lines and indentation are ruamel's (it
    guesses the file's indents). Call it only on a mapping that load_yaml has read.

    None when ruamel.yaml cannot read or write what PyYAML read: the caller checks the result
    against PyYAML's reading in any case (ruamel.yaml keeps the first of two equal keys, PyYAML
    the last)."""
    try:
        return _round_trip_set(text, values, spell)
    except (RuamelYAMLError, ValueError, LookupError, TypeError):
        return None


def _round_trip_set(text: str, values: dict[str, object], spell) -> str | None:
    y = _round_trip_yaml()
    data = y.load(text)
    if not isinstance(data, CommentedMap):
        return None
    mapping, sequence, offset = _indents(text)
    y.indent(mapping=mapping, sequence=sequence, offset=offset)
    y.explicit_start = re.match(_COMMENT_LINES + "---", text) is not None
    appended = [name.replace("_", "-") for name in values if not any(spell(k) == name for k in data)]
    closing = _detach_closing_comments(data) if appended and not data.fa.flow_style() else None
    for name, value in values.items():
        keys = [k for k in data if spell(k) == name]
        for key in keys or [name.replace("_", "-")]:
            data[key] = yaml.safe_dump(value).split("\n", 1)[0]  # PyYAML's spelling, as text
    if closing is not None:
        data.ca.items[appended[-1]] = [None, None, closing, None]
    _drop_orphaned_copies(data)
    _move_eol_comments_back(data)
    out = io.StringIO()
    y.dump(data, out)
    return _kept_around(text, out.getvalue())


def rewrite_set(data: dict, values: dict[str, object], spell) -> str:
    """The last resort, for a file ruamel.yaml reads otherwise than PyYAML (two equal keys):
    PyYAML writes the mapping `load_yaml` read anew, keys and values kept in order, the keys of
    `values` set as round_trip_set sets them, COMMENTS LOST."""
    data = dict(data)
    for name, value in values.items():
        for key in [k for k in data if spell(k) == name] or [name.replace("_", "-")]:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
