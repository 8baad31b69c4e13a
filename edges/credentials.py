"""Credentials off the command line: a vLLM argv's secrets move into the server's environment.

Anything on argv is world-readable (`ps`, /proc/<pid>/cmdline is mode 0444) and selfheal records
the argv of every canary in its log; /proc/<pid>/environ is readable by the owner only (0400).
So before selfheal starts a vLLM server (a canary, or production under `selfheal supervise`),
`split_credentials` takes the secrets off its argv and hands them back as environment variables
that vLLM reads instead:

- `--api-key K` -> `VLLM_API_KEY=K`. vLLM (vllm/entrypoints/openai/api_server.py, `build_app`):
  `tokens = [key for key in (args.api_key or [envs.VLLM_API_KEY]) if key]`, and vllm/envs.py:
  `"VLLM_API_KEY": lambda: os.environ.get("VLLM_API_KEY", None)`. The flag wins over the
  variable, and the variable holds exactly one key, while the flag takes several
  (vllm/entrypoints/openai/cli_args.py: `api_key: list[str] | None`, so `nargs="+"`). Several keys
  therefore cannot move into the environment: that is refused (CredentialError), never
  narrowed to one silently (production's other clients would lose their keys).
- `--hf-token T` -> `HF_TOKEN=T`. vLLM (vllm/engine/arg_utils.py) declares it
  `type=str, nargs="?", const=True`: a bare `--hf-token` means "the token of `hf auth login`"
  and carries no secret, so it stays on argv; with a value, vLLM hands the token to
  huggingface_hub, whose `get_token()` reads `HF_TOKEN` first when none is given
  (huggingface_hub/utils/_auth.py, `_get_token_from_environment`). Same token, same effect.

vLLM's FlexibleArgumentParser (vllm/utils/argparse_utils.py) accepts `--api_key` for
`--api-key`, and argparse accepts an unambiguous prefix (`--api-k`, `--hf-t`): both are moved
too. `--flag=` with nothing after the `=`, or `--api-key` followed by another flag or nothing,
is a CredentialError naming the flag. No message here ever contains a secret.

An API key can also sit in the YAML of `--config FILE` (`api-key: K`): vLLM reads that file's
keys as flags, so `config_file_api_key` reads it for the Bearer header, and the file's key
wins over VLLM_API_KEY, as it does in vLLM.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import yaml

from selfheal.schemas.config import ConfigError
from selfheal.schemas.vllm_yaml import load_yaml, read_yaml_text

API_KEY_ENV = "VLLM_API_KEY"
HF_TOKEN_ENV = "HF_TOKEN"
#: the secret variables selfheal knows of: their values are redacted from what it keeps
SECRET_ENV = (API_KEY_ENV, HF_TOKEN_ENV)
REDACTED = "***"
#: a value shorter than this is not searched for in logs: it would match ordinary text
MIN_REDACTED_LEN = 4

#: flag -> (variable, shortest prefix argparse accepts as that flag, whether a bare flag is valid)
_FLAGS = {"--api-key": (API_KEY_ENV, "--api-k", False), "--hf-token": (HF_TOKEN_ENV, "--hf-t", True)}


class CredentialError(ValueError):
    """A credential flag that cannot be moved off the command line (it never quotes the secret)."""


def _flag(item: str) -> tuple[str | None, str | None]:
    """(canonical credential flag, the value after `=` or None) if `item` names one, else (None, None)."""
    if not item.startswith("--"):
        return None, None
    name, eq, value = item.partition("=")
    name = name.replace("_", "-")
    for flag, (_, shortest, _) in _FLAGS.items():
        if name.startswith(shortest) and flag.startswith(name):
            return flag, (value if eq else None)
    return None, None


def split_credentials(argv: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """(argv without its credentials, the environment variables that carry them instead).

    A flag given twice: the last one counts, as with argparse. Raises CredentialError for a
    flag without a value and for several API keys (see the module doc)."""
    items = [str(a) for a in argv]
    kept: list[str] = []
    env: dict[str, str] = {}
    i = 0
    while i < len(items):
        flag, inline = _flag(items[i])
        if flag is None:
            kept.append(items[i])
            i += 1
            continue
        variable, _, bare_ok = _FLAGS[flag]
        if inline is not None:           # --flag=value: exactly that one value
            values, nxt = [inline], i + 1
        else:                            # --flag v1 [v2 ...]: values up to the next option
            nxt = i + 1
            while nxt < len(items) and not items[nxt].startswith("-"):
                nxt += 1
            values = items[i + 1:nxt]
            if flag == "--hf-token":     # nargs="?": at most one value
                values, nxt = values[:1], i + 1 + len(values[:1])
        if not values and bare_ok:       # a bare --hf-token: the stored login, no secret here
            kept.append(items[i])
            i = nxt
            continue
        if not values or not all(values):
            raise CredentialError(f"{flag} is given without a value")
        if len(values) > 1:
            raise CredentialError(f"{flag} is given {len(values)} keys, but vLLM's {variable} holds one: give "
                                  f"one key, or put the keys in the `--config` YAML (api-key: [...])")
        env[variable] = values[0]
        i = nxt
    return kept, env


def config_file_api_key(argv: Iterable[str]) -> str | None:
    """The first API key in the YAML that `--config FILE` in `argv` names, if any (unreadable: None)."""
    items = [str(a) for a in argv]
    path = None
    for i, item in enumerate(items):
        if item == "--config" and i + 1 < len(items):
            path = items[i + 1]
        elif item.startswith("--config="):
            path = item.partition("=")[2]
    if not path:
        return None
    try:
        raw = load_yaml(read_yaml_text(path), path)  # bounded: the file is the operator's, not trusted
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError):
        return None
    if not isinstance(raw, dict):
        return None
    value = raw.get("api-key", raw.get("api_key"))
    keys = value if isinstance(value, list) else [value]
    return next((str(k) for k in keys if k not in (None, "")), None)


def api_key(argv: Iterable[str], env: Mapping[str, str]) -> str | None:
    """The key a client must present to the server started with `argv` (credentials already
    moved) and environment `env`: the `--config` YAML's key, else VLLM_API_KEY, else None."""
    return config_file_api_key(argv) or env.get(API_KEY_ENV) or None


def launch(argv: Iterable[str], env: Mapping[str, str], base: Mapping[str, str] | None = None
           ) -> tuple[list[str], dict[str, str], str | None]:
    """What a vLLM server is started with: (argv without credentials, its whole environment,
    the API key it will demand). The environment is `base` (default: selfheal's own), then the
    deployment's `env`, then the moved credentials: a flag wins over a variable, as in vLLM."""
    clean, moved = split_credentials(argv)
    full = {**(os.environ if base is None else base), **env, **moved}
    return clean, full, api_key(clean, full)


def secrets_in(env: Mapping[str, str], *extra: str | None) -> list[str]:
    """The secret values among `env` and `extra` that are long enough to search for, longest first."""
    found = {v for v in [*(env.get(name) for name in SECRET_ENV), *extra] if v and len(v) >= MIN_REDACTED_LEN}
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def bearer(key: str | None) -> dict[str, str]:
    """The Authorization header vLLM's AuthenticationMiddleware checks ({} without a key)."""
    return {"Authorization": f"Bearer {key}"} if key else {}
