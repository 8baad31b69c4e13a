"""Credentials off the command line: the pure argv -> (argv, environment) move, its edge cases,
and a credential flag that cannot move being a config error before any canary runs."""
from __future__ import annotations

import pytest

from selfheal.edges import credentials
from selfheal.edges.credentials import CredentialError, split_credentials
from selfheal.edges.deployments import from_vllm
from selfheal.edges.vllm_backend import VllmCanaryBackend
from selfheal.schemas.config import ConfigError, parse_settings

KEY, TOKEN = "sk-canary-0123456789", "hf_abcdefghijklmnop"


@pytest.mark.parametrize("argv", [
    ["vllm", "serve", "m", "--api-key", KEY, "--hf-token", TOKEN, "--port", "8000"],
    ["vllm", "serve", "m", f"--api-key={KEY}", f"--hf-token={TOKEN}", "--port", "8000"],
    ["vllm", "serve", "m", "--api_key", KEY, f"--hf_token={TOKEN}", "--port", "8000"],   # FlexibleArgumentParser
    ["vllm", "serve", "m", "--api-k", KEY, "--hf-tok", TOKEN, "--port", "8000"],          # argparse prefixes
    ["vllm", "serve", "m", "--api-key", "old", "--port", "8000", "--api-key", KEY, "--hf-token", TOKEN],  # last wins
])
def test_the_credentials_move_to_the_environment(argv):
    clean, env = split_credentials(argv)
    assert clean == ["vllm", "serve", "m", "--port", "8000"]
    assert env == {"VLLM_API_KEY": KEY, "HF_TOKEN": TOKEN}


def test_an_argv_without_credentials_is_left_as_it_is():
    argv = ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}", "--api-server-count", "2",
            "--hf-overrides", '{"a": 1}', "--override-generation-config", '{"temperature": 0}']
    assert split_credentials(argv) == (argv, {})


def test_a_bare_hf_token_is_vllms_stored_login_and_stays():
    # vLLM: --hf-token is nargs="?" const=True -- the token of `hf auth login`, no secret on argv
    assert split_credentials(["vllm", "--hf-token", "--port", "1"]) == (["vllm", "--hf-token", "--port", "1"], {})
    assert split_credentials(["vllm", "--hf-token"]) == (["vllm", "--hf-token"], {})
    # nargs="?": one value at most; what follows is the next argument
    assert split_credentials(["vllm", "--hf-token", TOKEN, "extra"]) == (["vllm", "extra"], {"HF_TOKEN": TOKEN})


@pytest.mark.parametrize("argv, flag", [
    (["vllm", "--api-key"], "--api-key"),
    (["vllm", "--api-key", "--port", "1"], "--api-key"),
    (["vllm", "--api-key="], "--api-key"),
    (["vllm", "--api-key", ""], "--api-key"),     # vLLM drops an empty key: no authentication at all
    (["vllm", "--hf-token="], "--hf-token"),
    (["vllm", "--hf_token="], "--hf-token"),
])
def test_a_flag_without_a_value_is_an_error_naming_it(argv, flag):
    with pytest.raises(CredentialError, match=f"^{flag} is given without a value$"):
        split_credentials(argv)


def test_several_keys_cannot_move_into_the_one_variable():
    # vLLM: --api-key takes several keys (list[str]), VLLM_API_KEY holds one
    with pytest.raises(CredentialError) as err:
        split_credentials(["vllm", "--api-key", KEY, "second-key-4567", "--port", "1"])
    assert "--api-key is given 2 keys" in str(err.value) and "VLLM_API_KEY holds one" in str(err.value)
    assert KEY not in str(err.value) and "second-key-4567" not in str(err.value)


def test_the_key_a_client_presents(tmp_path):
    assert credentials.api_key(["vllm"], {}) is None
    assert credentials.api_key(["vllm"], {"VLLM_API_KEY": KEY}) == KEY
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("max-model-len: 4096\napi-key: [from-yaml-1, from-yaml-2]\n")
    # a --config YAML's keys are flags to vLLM: they win over the variable
    assert credentials.api_key(["vllm", "--config", str(yaml_file)], {"VLLM_API_KEY": KEY}) == "from-yaml-1"
    yaml_file.write_text("api_key: single\n")
    assert credentials.api_key([f"--config={yaml_file}"], {}) == "single"
    assert credentials.api_key(["--config", str(tmp_path / "missing.yaml")], {"VLLM_API_KEY": KEY}) == KEY


def test_launch_layers_the_environment_flag_over_variable():
    argv, env, key = credentials.launch(["vllm", "--api-key", KEY], {"VLLM_API_KEY": "from-env", "X": "1"},
                                        base={"PATH": "/bin", "X": "0"})
    assert argv == ["vllm"] and env == {"PATH": "/bin", "X": "1", "VLLM_API_KEY": KEY} and key == KEY


def test_redaction():
    text = f"non-default args: {{'api_key': ['{KEY}'], 'hf_token': '{TOKEN}'}} key"
    secrets = credentials.secrets_in({"VLLM_API_KEY": KEY, "HF_TOKEN": TOKEN, "OTHER": "x"}, None, "key")
    assert secrets == [KEY, TOKEN]            # longest first; "key" is too short to search ordinary text for
    assert credentials.redact(text, secrets) == "non-default args: {'api_key': ['***'], 'hf_token': '***'} key"


def test_the_backend_keeps_no_secret_in_its_command():
    b = VllmCanaryBackend(["vllm", "serve", "{model}", "--api-key", KEY, "--hf-token", TOKEN], "m")
    assert KEY not in repr(b.command) and TOKEN not in repr(b.command)
    with pytest.raises(CredentialError):
        VllmCanaryBackend(["vllm", "serve", "{model}", "--api-key"], "m")


def test_a_credential_that_cannot_move_is_a_config_error():
    settings = parse_settings(f'[deployments.q]\ncanary_backend = "vllm"\nmodel = "m"\ninventory = "host"\n'
                              f'command = ["vllm", "serve", "{{model}}", "--api-key", "{KEY}", "k2-67890"]\n'
                              'current = {max_model_len = 4096}\n').deployments["q"]
    with pytest.raises(ConfigError, match=r"^deployments\.q\.command: --api-key is given 2 keys") as err:
        from_vllm("q", settings)
    assert KEY not in str(err.value)
