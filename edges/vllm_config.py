"""Writing a deployment's vLLM config file (the YAML `vllm serve --config FILE` reads), safely.

selfheal owns only the keys in `schemas.serving.TUNABLE`; everything else in the file belongs
to whoever wrote it and is kept. A write is atomic (temporary file in the same folder, fsync,
rename, fsync of the folder), so the path holds the old or the new complete file at every
moment, and the version before it is kept beside it as `NAME.previous` for rollback.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import yaml

from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.config import ConfigError
from selfheal.schemas.serving import TUNABLE, ServingConfig
from selfheal.schemas.vllm_yaml import compose_yaml, load_yaml, read_yaml_text, rewrite_set, round_trip_set

TMP_MARK = ".selfheal-tmp-"
PREVIOUS_SUFFIX = ".previous"
#: leftovers of a write that was killed: `.NAME.selfheal-tmp-XXXXXXXX` (mkstemp's suffix)
_STALE = re.compile(r"^\..+" + re.escape(TMP_MARK) + r"[A-Za-z0-9_]+$")
#: between a simple key and its value: the colon and blanks only. A value's span starts at
#: its own anchor or tag (they are replaced with it; an anchor others refer to then fails the
#: read-back check); an alias's span is its anchor's, elsewhere, so it does not match here
_COLON = re.compile(r"[ \t]*:[ \t]+")
#: every load and compose goes through schemas.vllm_yaml's bounded loader: the pure-Python one
#: (its marks are indices into the Python string, which the line edits rely on; libyaml counts
#: differently around a BOM), with limits on size, depth and aliases (a "billion laughs")


@dataclass(frozen=True)
class WriteResult:
    path: Path                  #: the file written (a same-folder symlink's target, not the link)
    sha256: str                 #: of the bytes now at `path`
    previous_path: Path | None  #: `NAME.previous`, the version before this one, when there is one
    bytes: int                  #: size of the content now at `path`
    changed: bool = True        #: False when the file already held exactly these bytes (nothing written)
    method: str | None = None   #: how `commit` rendered: "new", "lines", "round-trip" or "rewrite" (see render)


@dataclass(frozen=True)
class Rendered:
    text: str
    method: str  #: "new" (no file before), "lines" (in-place line edits), "round-trip" (ruamel.yaml), "rewrite" (PyYAML)


# --- parsing ------------------------------------------------------------------------------------

def _where(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f"{mark.line + 1}:{mark.column + 1}"
    pos = getattr(exc, "position", None)  # ReaderError (a control character) has a position only
    if isinstance(pos, int):
        before = text[:pos]
        return f"{before.count(chr(10)) + 1}:{pos - (before.rfind(chr(10)) + 1) + 1}"
    return "1:1"


def validate(text: str, path: str | os.PathLike) -> dict:
    """The YAML as a mapping; ConfigError naming `path:line:column` when it is not one.

    An empty (or comments-only) document counts as an empty mapping: it sets nothing, and
    refusing it would make a freshly created, empty config file impossible to commit to.
    """
    try:
        data = load_yaml(text, path)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(f"{path}:{_where(exc, text)}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        node = compose_yaml(text, path)
        mark = node.start_mark
        raise ConfigError(f"{path}:{mark.line + 1}:{mark.column + 1}: a vLLM config must be a mapping of "
                          f"flag names to values, got a {type(data).__name__}")
    return data


def _norm(key: object) -> str | None:
    return key.replace("-", "_") if isinstance(key, str) else None


def _dashed(name: str) -> str:
    return name.replace("_", "-")


# --- rendering ----------------------------------------------------------------------------------

def _values(config: ServingConfig) -> dict[str, object]:
    """The config's tunables, type-checked: msgspec does not validate on construction, and a
    string "8" would otherwise be written as a quoted YAML string."""
    out = {}
    for name in TUNABLE:
        value = getattr(config, name)
        kinds = (bool,) if name == "enforce_eager" else (int, float) if name == "gpu_memory_utilization" else (int,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{name}={value!r} has the wrong type for a vLLM config")
        out[name] = float(value) if name == "gpu_memory_utilization" else value
    return out


def _scalar(value: object) -> str:
    # PyYAML's own spelling, so a value reads back as what was meant (1e-05 -> 1.0e-05, True -> true)
    return yaml.safe_dump(value).split("\n", 1)[0]


def _line_edits(text: str, values: dict[str, object]) -> str | None:
    """`text` with each top-level tunable's value replaced in place and missing ones appended,
    or None when the file is not simple enough for that (then the caller round-trips)."""
    root = compose_yaml(text, "<vLLM config>")
    if root is not None and (not isinstance(root, yaml.MappingNode) or root.flow_style):
        return None
    edits: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for key, value in (root.value if root is not None else []):
        name = _norm(key.value) if isinstance(key, yaml.ScalarNode) else None
        if name not in values:
            continue
        simple = (key.style is None and key.start_mark.column == 0
                  and isinstance(value, yaml.ScalarNode) and value.style in (None, "'", '"')
                  and key.start_mark.line == value.start_mark.line == value.end_mark.line
                  and value.end_mark.index > value.start_mark.index
                  and _COLON.fullmatch(text, key.end_mark.index, value.start_mark.index) is not None)
        if not simple:
            return None
        # every occurrence is set (both spellings may be present; all must agree)
        edits.append((value.start_mark.index, value.end_mark.index, _scalar(values[name])))
        seen.add(name)
    missing = [name for name in TUNABLE if name not in seen]
    if missing and root is not None and root.start_mark.column != 0:
        return None  # an indented document: a key appended at column 0 would not join it
    out = text
    for start, end, new in sorted(edits, reverse=True):
        out = out[:start] + new + out[end:]
    if missing:
        nl = "\r\n" if "\r\n" in text else "\n"
        if out and not out.endswith("\n"):
            out += nl
        out += "".join(f"{_dashed(name)}: {_scalar(values[name])}{nl}" for name in missing)
    return out


def _same(a: object, b: object) -> bool:
    if a == b:
        return True
    try:  # NaN != NaN; dumping compares what YAML would say
        return yaml.safe_dump(a, sort_keys=True) == yaml.safe_dump(b, sort_keys=True)
    except (TypeError, yaml.YAMLError):  # keys of mixed types cannot be sorted
        return False


def _faithful(text: str, original: dict, values: dict[str, object]) -> bool:
    """Whether `text` sets exactly `values` and keeps every other key of `original` unchanged."""
    try:
        data = validate(text, "<rendered>")
    except ConfigError:
        return False
    for key, value in data.items():  # every spelling present must hold the value, as its type
        want = values.get(_norm(key), data)
        if want is not data and (value != want or type(value) is not type(want)):
            return False
    if {_norm(k) for k in data} & set(values) != set(values):
        return False
    def others(d: dict) -> dict:
        return {k: v for k, v in d.items() if _norm(k) not in values}
    return _same(others(data), others(original))


def render_plan(existing_text: str | None, config: ServingConfig) -> Rendered:
    """Like `render`, also saying which way the text was produced."""
    values = _values(config)
    if existing_text is None or not existing_text.strip():
        return Rendered(text="".join(f"{_dashed(n)}: {_scalar(values[n])}\n" for n in TUNABLE), method="new")
    original = validate(existing_text, "<existing vLLM config>")
    text = _line_edits(existing_text, values)
    if text is not None and _faithful(text, original, values):
        return Rendered(text=text, method="lines")
    text = round_trip_set(existing_text, values, _norm)
    if text is not None and _faithful(text, original, values):
        return Rendered(text=text, method="round-trip")
    text = rewrite_set(original, values, _norm)
    if not _faithful(text, original, values):  # should not happen; never write what we cannot read back
        raise ConfigError("cannot render the vLLM config: the result does not read back as written")
    return Rendered(text=text, method="rewrite")


def render(existing_text: str | None, config: ServingConfig) -> str:
    """The vLLM YAML with selfheal's tunables set to `config`'s values and every other key kept.

    The usual path edits lines: each top-level `key: value` line of a tunable (spelled
    `max-model-len` or `max_model_len`; the file's spelling is kept) gets its new value in
    place, so other keys, their order, comments and blank lines are untouched, and tunables
    the file lacks are appended at the end in vLLM's dashed spelling. When the file is not
    that simple (a flow-style root `{...}`, a tunable whose value is an alias, an anchor other
    keys refer to, a multi-line or empty value, an indented document, an explicit `...`
    document end), it goes through ruamel.yaml's round trip (schemas.vllm_yaml.round_trip_set):
    comments, anchors and aliases, flow style, block scalars, quoting and key order are kept;
    blank lines between keys, indentation and a comment's column may be ruamel.yaml's. Either
    way the result is parsed back with PyYAML, as vLLM reads it, and must set exactly these
    values and keep every other key. Where ruamel.yaml reads the file otherwise than PyYAML
    (a key given twice: ruamel.yaml keeps the first value, PyYAML and so vLLM the last), PyYAML
    writes the mapping anew ("rewrite"): keys, values and order kept, COMMENTS LOST.
    """
    return render_plan(existing_text, config).text


# --- atomic writes ------------------------------------------------------------------------------

def _target(path: str | os.PathLike) -> Path:
    """The regular file to write for `path`, refusing symlinks that leave its folder.

    A symlink to a file in the same folder is written through (its target is replaced, the
    link stays), so a config kept as `current.yaml -> v3.yaml` keeps working."""
    p = Path(os.path.abspath(path))
    folder = p.parent
    if os.path.islink(folder):
        raise ConfigError(f"{p}: refused: its folder {folder} is a symlink")
    if not folder.is_dir():
        raise ConfigError(f"{p}: refused: folder {folder} does not exist")
    if os.path.islink(p):
        real = Path(os.path.realpath(p))
        if real.parent != Path(os.path.realpath(folder)):
            raise ConfigError(f"{p}: refused: it is a symlink to {real}, outside its folder")
        p = folder / real.name
        if os.path.islink(p):
            raise ConfigError(f"{p}: refused: symlink loop")
    if p.exists() and not p.is_file():
        raise ConfigError(f"{p}: refused: not a regular file")
    return p


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(folder: Path, final_name: str, data: bytes, perm: int, owner: tuple[int, int] | None) -> str:
    """A complete, fsynced file beside `final_name` with its permissions; the caller renames it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final_name}{TMP_MARK}", dir=folder)
    try:
        try:
            if owner is not None and owner != (os.fstat(fd).st_uid, os.fstat(fd).st_gid):
                for uid in (owner[0], -1):  # not root: keeping the group alone may still be allowed
                    with suppress(PermissionError):
                        os.fchown(fd, uid, owner[1])
                        break
            os.fchmod(fd, perm)  # after chown, which may clear set-id bits; fchmod ignores the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str | Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def write_atomic(path: str | os.PathLike, text: str | bytes, *, keep_previous: bool = True,
                 mode: int | None = None) -> WriteResult:
    """Replace the file at `path` with `text` so that it holds the old or the new complete file
    at every moment, keeping the old one as `NAME.previous` (written atomically too).

    The new file keeps the old one's permission bits and, where permitted, its owner; a new
    file gets `mode` (default 0o600: a config may hold an API key). Writing exactly the bytes
    already there writes nothing (`changed=False`) and leaves `.previous` alone, so a repeated
    commit never overwrites the rollback target with the current version.
    """
    target = _target(path)
    folder = target.parent
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    digest = hashlib.sha256(data).hexdigest()
    previous = folder / f"{target.name}{PREVIOUS_SUFFIX}"
    try:
        try:
            st = os.stat(target)
            old = target.read_bytes()
        except FileNotFoundError:
            st, old = None, None
        if old == data:
            return WriteResult(target, digest, previous if previous.exists() else None, len(data), changed=False)
        perm = stat.S_IMODE(st.st_mode) if st else (0o600 if mode is None else mode)
        owner = (st.st_uid, st.st_gid) if st else None
        tmp = _write_temp(folder, target.name, data, perm, owner)
        try:
            kept = None
            if keep_previous and old is not None:
                ptmp = _write_temp(folder, previous.name, old, perm, owner)
                try:
                    os.replace(ptmp, previous)
                except BaseException:
                    _unlink(ptmp)
                    raise
                _fsync_dir(folder)  # `.previous` is durable before the target changes
                kept = previous
            os.replace(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise
        _fsync_dir(folder)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from None
    return WriteResult(target, digest, kept, len(data), changed=True)


def clean_stale_temps(folder: str | os.PathLike, *, name: str | None = None,
                      min_age_s: float = 0.0) -> list[Path]:
    """Remove temporary files left by writes that were killed; returns what was removed.

    `name` limits it to the temps of that file (its own and its `.previous`'s): what `commit`
    and `restore_previous` clean before they write, since a killed write of a file is resumed
    by the next write of that same file. `min_age_s` spares temps younger than that, for a
    folder another writer may be using now. A temp that cannot be removed (another owner) is
    left and not returned: cleaning never stops a write."""
    pattern = _STALE if name is None else re.compile(
        r"^\." + re.escape(name) + "(?:" + re.escape(PREVIOUS_SUFFIX) + ")?" + re.escape(TMP_MARK) + r"[A-Za-z0-9_]+$")
    removed = []
    now = time.time()
    with os.scandir(folder) as entries:
        for entry in entries:
            if not pattern.match(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            if min_age_s and now - entry.stat(follow_symlinks=False).st_mtime < min_age_s:
                continue
            try:
                _unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


# --- commit and rollback ------------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return read_yaml_text(path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def commit(path: str | os.PathLike, config: ServingConfig, bounds: ActuatorBounds) -> WriteResult:
    """Write `config`'s tunables into the vLLM YAML at `path`, keeping everything else.

    Refused with nothing written: values outside `bounds`, an existing file that does not
    parse or is not a mapping, a symlink out of the folder. Idempotent: the same config twice
    renders the same bytes and the second call writes nothing (`changed=False`)."""
    problems = bounds.violations(config)
    if problems:
        raise ConfigError(f"{path}: refused, outside the actuator bounds: {'; '.join(problems)}")
    target = _target(path)
    clean_stale_temps(target.parent, name=target.name)  # a killed commit of this file left them
    existing = _read(target)
    if existing is not None:
        validate(existing, target)  # names the real file, line and column
    plan = render_plan(existing, config)
    validate(plan.text, target)
    result = write_atomic(target, plan.text)
    return WriteResult(result.path, result.sha256, result.previous_path, result.bytes, result.changed, plan.method)


def restore_previous(path: str | os.PathLike) -> WriteResult:
    """Put `NAME.previous` back at `path`, atomically.

    `.previous` is left as it is (it now equals the file), so restoring twice, as a resumed
    rollback may, writes nothing the second time. The version rolled back from is not kept
    on disk; the caller's events record it."""
    target = _target(path)
    clean_stale_temps(target.parent, name=target.name)  # a killed commit or restore of this file left them
    previous = target.parent / f"{target.name}{PREVIOUS_SUFFIX}"
    if os.path.islink(previous):
        raise ConfigError(f"{previous}: refused: the previous version is a symlink")
    text = _read(previous)
    if text is None:
        raise ConfigError(f"{target}: no previous version to restore ({previous} is missing)")
    validate(text, previous)
    # a target deleted meanwhile comes back with the previous version's permissions
    result = write_atomic(target, text, keep_previous=False, mode=stat.S_IMODE(os.stat(previous).st_mode))
    return WriteResult(result.path, result.sha256, previous, result.bytes, result.changed, None)


class VllmYaml:
    """The ConfigFile port (handlers.ports) over this module: atomic commits and restores."""

    def commit(self, path: str, config: ServingConfig, bounds: ActuatorBounds) -> WriteResult:
        return commit(path, config, bounds)

    def restore_previous(self, path: str) -> WriteResult:
        return restore_previous(path)
