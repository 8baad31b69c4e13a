"""Redaction (issue 19): secrets are replaced by keyed tokens before anything is recorded.

The vLLM lines take their shape from startup logs posted in vLLM issues: `non-default args:
{...}` (0.11 to 0.17, `'api_key'` a list, docker-compose prefixes included) and
`args: Namespace(...)` (0.4 to 0.8). The secrets in them are fake.
"""
from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from selfheal.schemas.config import ConfigError, parse_settings
from selfheal.schemas.redaction import Redactor, check_pattern, is_secret_name, is_token, known_secrets

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
KEY = b"selfheal-test-key-0123456789abcdef"
HF = "hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"  # hf_ and 34 letters
R = Redactor(KEY)
T = R.token
TOKEN = re.compile(r"\[redacted:[0-9a-f]{8}\]")


def read(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


# -- vLLM startup logs ---------------------------------------------------------------------------

def test_non_default_args_keep_their_shape_and_numbers():
    log = read("secrets_vllm_startup.log")
    out = R.text(log)
    for secret in ("sk-test-4f9a1c2e7b3d8a6f0e1d2c3b", "sk-test-rotated-000111222333",
                   "hf_TestTokenAbcdefghijklmnopqrstuvwxyzAB"):
        assert secret in log and secret not in out
    args = next(line for line in out.splitlines() if "non-default args:" in line)
    assert (f"'api_key': ['{T('sk-test-4f9a1c2e7b3d8a6f0e1d2c3b')}', '{T('sk-test-rotated-000111222333')}']"
            in args)
    assert f"'hf_token': '{T('hf_TestTokenAbcdefghijklmnopqrstuvwxyzAB')}'" in args
    for kept in ("'max_model_len': 2048", "'gpu_memory_utilization': 0.85", "'max_num_batched_tokens': 8192",
                 "'max_num_seqs': 4", "'enforce_eager': True", "'port': 8011"):
        assert kept in args
    # every other line, the 3,400-character engine config included, is untouched
    changed = [(a, b) for a, b in zip(log.splitlines(), out.splitlines()) if a != b]
    assert len(out.splitlines()) == len(log.splitlines()) and [a for a, _ in changed] == [
        line for line in log.splitlines() if "non-default args:" in line]


def test_namespace_args_of_older_vllm():
    log = read("secrets_vllm_namespace.log")
    out = R.text(log)
    assert "sk-test-" not in out and "hf_Namespace" not in out
    assert f"api_key='{T('sk-test-old-namespace-5e6f7a8b9c0d')}'" in out
    assert f"api_key='{T('sk-test-new-namespace-1a2b3c4d5e6f')}'" in out
    assert f"hf_token='{T('hf_NamespaceTestTokenAbcdefghijklmnopqrstu')}'" in out
    for kept in ("allow_credentials=False", "ssl_keyfile=None", "ssl_keyfile='/etc/vllm/tls/server.key'",
                 "tokenizer=None", "tokenizer_mode='auto'", "max_model_len=16384", "max_model_len=32768",
                 "gpu_memory_utilization=1.0", "gpu_memory_utilization=0.9", "max_num_batched_tokens=None",
                 "long_prefill_token_threshold=0", "return_tokens_as_token_ids=False", "num_speculative_tokens=None",
                 "enable_prompt_tokens_details=False", "# GPU blocks: 0, # CPU blocks: 2048",
                 "max_num_batched_tokens=2048."):
        assert kept in out
    assert sum(a != b for a, b in zip(log.splitlines(), out.splitlines())) == 2


def test_compose_prefixed_line_with_a_placeholder_key():
    line = ("glm-ocr  | (APIServer pid=1) INFO 03-20 10:08:10 [utils.py:233] non-default args: {'model_tag': "
            "'/models/vision/ocr/GLM-OCR', 'host': '0.0.0.0', 'api_key': ['EMPTY'], 'trust_remote_code': True, "
            "'max_model_len': 8192, 'gpu_memory_utilization': 0.18, 'max_num_batched_tokens': 8192, 'max_num_seqs': 2}")
    out = R.text(line)
    assert out == line.replace("['EMPTY']", f"['{T('EMPTY')}']")


# -- what is redacted, what is not --------------------------------------------------------------

#: (text, the one secret in it): the secret becomes its token, everything around it stays
REDACTED = {
    "credential flags": [
        ("vllm serve m --api-key sk-test-1 --port 8000", "sk-test-1"),
        ("vllm serve m --api-key=sk-test-1", "sk-test-1"),
        ("vllm serve m --api-key 'sk test 1'", "sk test 1"),
        ('vllm serve m --api-key "sk-test-1"', "sk-test-1"),
        ("vllm serve m --hf-token hf_short", "hf_short"),
        ("--token abc123", "abc123"),
        ("--secret-key v1", "v1"),
        ("--db-password=v2", "v2"),
        ("--client-credential v3", "v3"),
        ("--auth v4", "v4"),
        ("--passwd v5", "v5"),
        ("['vllm', 'serve', '--api-key', 'sk-test-1', '--port', '8000']", "sk-test-1"),
    ],
    "dict, Namespace, JSON and YAML entries": [
        ("{'api_key': 'sk-test-1', 'max_model_len': 8192}", "sk-test-1"),
        ("{'api_key': ['sk-test-1'], 'port': 8000}", "sk-test-1"),
        ("Namespace(api_key='sk-test-1', max_num_seqs=256)", "sk-test-1"),
        (f"Namespace(hf_token='{HF}', dtype='auto')", HF),
        ('{"api_key": "sk-test-1", "max_tokens": 32}', "sk-test-1"),
        ('{"apiKey":"sk-test-1"}', "sk-test-1"),
        ("api-key: sk-test-1", "sk-test-1"),
        ("X-Api-Key: sk-test-1", "sk-test-1"),
        ("{'prompt_tokens': '512', 'output_tokens': '64', 'api_key': 'sk-test-1'}", "sk-test-1"),
    ],
    "environment assignments": [
        ("export HF_TOKEN=abc123", "abc123"),
        ('OPENAI_API_KEY="abc def" vllm serve m', "abc def"),
        ("AWS_SECRET_ACCESS_KEY: xyz789", "xyz789"),
        ("VLLM_API_KEY='sk-test-1'", "sk-test-1"),
        ("DB_PASSWORD=12345678", "12345678"),
        ("MY_SERVICE_CREDENTIALS=blob", "blob"),
    ],
    "Hugging Face tokens anywhere": [
        (f"Logging in with {HF} (cached at ~/.cache/huggingface/token)", HF),
    ],
    "authorization headers and Bearer (the scheme word stays)": [
        ("curl -H 'Authorization: Bearer sk-test-1' http://h/v1/models", "sk-test-1"),
        ('{"Authorization": "Bearer sk-test-1"}', "sk-test-1"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("request failed with Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "eyJhbGciOiJIUzI1NiJ9.e30.abc"),
    ],
    "passwords in URLs (the user stays)": [
        ("--db postgresql://selfheal:s3cret-pw@db.internal:5432/log", "s3cret-pw"),
        ("fetching https://user:p4ss:word@mirror.example.com/models", "p4ss:word"),
        ("redis://:only-a-password@cache:6379/0", "only-a-password"),
    ],
}

#: texts with nothing to redact: each comes back as the very same object
LEFT_ALONE = {
    "flags that are not credentials": [
        "vllm serve m --max-num-batched-tokens 8192 --max-num-seqs 4",
        "vllm serve m --tokenizer foo/bar --tokenizer-mode slow --tokenizer-revision main",
        "vllm serve m --max-tokens 32 --disable-log-stats --num-speculative-tokens 2",
        "vllm serve m --allow-credentials --port 8000",
        "vllm serve m --ssl-keyfile /etc/ssl/server.key --long-prefill-token-threshold 0",
        "vllm serve m --skip-tokenizer-init --return-tokens-as-token-ids",
        "vllm serve m --api-key --port 8000",  # no value: the next item is a flag
    ],
    "switches, numbers, other names": [
        "Namespace(api_key=None, hf_token=None, allow_credentials=False)",
        "{'api_key': None, 'hf_token': True, 'max_model_len': 8192}",
        "Namespace(api_key='', port=8000)",
        '{"api_key": null, "token": false}',
        "KeyError: 'model.layers.0.self_attn.qkv_proj.weight'",
        "(EngineCore pid=1) INFO [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens, Maximum concurrency "
        "for 2,048 tokens per request: 512.00x",
        "WARNING Chunked prefill is enabled with max_num_batched_tokens=2048.",
    ],
    "environment names that hold no secret": [
        "MAX_TOKENS=512", "TOKENIZERS_PARALLELISM=false", "VLLM_MAX_NUM_BATCHED_TOKENS=8192",
        "AWS_ACCESS_KEY_ID=AKIAEXAMPLE", "HF_TOKEN_PATH=/root/.cache/huggingface/token", "SSL_KEYFILE=/etc/ssl/key.pem",
    ],
    "hf_ that is no token": [
        "'hf_overrides': {'architectures': ['X']}", "id hf_" + "a" * 29 + " here", "xhf_" + "a" * 34,
    ],
    "prose and URLs without a password": [
        "the /v1 paths want a Bearer token",
        "Starting vLLM server on http://127.0.0.1:8011 see https://docs.vllm.ai/en/latest/ mail a@b.c",
    ],
}


@pytest.mark.parametrize("text, secret", [
    pytest.param(text, secret, id=f"{kind}: {text[:40]}")
    for kind, cases in REDACTED.items() for text, secret in cases])
def test_redacted_in_place(text, secret):
    assert text.count(secret) == 1
    assert R.text(text) == text.replace(secret, T(secret))


@pytest.mark.parametrize("text", [
    pytest.param(text, id=f"{kind}: {text[:40]}") for kind, texts in LEFT_ALONE.items() for text in texts])
def test_left_alone(text):
    assert R.text(text) is text


def test_a_list_of_keys_is_redacted_item_by_item():
    out = R.text("non-default args: {'api_key': ['sk-test-1', \"sk-test-2\"], 'max_model_len': 8192}")
    assert out == f"non-default args: {{'api_key': ['{T('sk-test-1')}', \"{T('sk-test-2')}\"], 'max_model_len': 8192}}"


@pytest.mark.parametrize("name, secret", [
    ("api_key", True), ("API_KEY", True), ("apiKey", True), ("hf_token", True), ("HUGGING_FACE_HUB_TOKEN", True),
    ("use_auth_token", True), ("Authorization", True), ("client_secret", True), ("passphrase", True),
    ("api_keys", True), ("x-api-key", True),
    ("max_num_batched_tokens", False), ("MAX_TOKENS", False), ("tokenizer", False), ("tokenizer_mode", False),
    ("TOKENIZERS_PARALLELISM", False), ("allow_credentials", False), ("ssl_keyfile", False),
    ("return_tokens_as_token_ids", False), ("long_prefill_token_threshold", False), ("AWS_ACCESS_KEY_ID", False),
    ("KeyError", False), ("author", False), ("keyword", False), ("pass_config", False), ("max_model_len", False),
    ("kv_cache_tokens", False), ("VLLM_MAX_NUM_BATCHED_TOKENS", False), ("detokenize", False),
])
def test_the_rule_for_names(name, secret):
    assert is_secret_name(name) is secret


def test_known_strings_longest_first_anywhere_and_not_the_short_ones():
    redactor = Redactor(KEY, known=["deploy-secret", "deploy-secret-rotated-2", "short7!", "BEGIN\nKEY\nEND"])
    text = ("a=deploy-secret-rotated-2 b=xdeploy-secretx c=short7! pem:BEGIN\nKEY\nEND")
    out = redactor.text(text)
    assert out == (f"a={T('deploy-secret-rotated-2')} b=x{T('deploy-secret')}x c=short7! "
                   f"pem:{T('BEGIN' + chr(10) + 'KEY' + chr(10) + 'END')}")
    assert redactor.text(out) == out


def test_a_known_string_inside_a_token_is_left_alone():
    inner = T("x")[1:-1]  # "redacted:xxxxxxxx": a known string of 17 characters
    redactor = Redactor(KEY, known=[inner])
    text = f"value {T('x')} and {inner}"
    assert redactor.text(text) == f"value {T('x')} and {T(inner)}"


def test_operator_patterns_secret_group_or_whole_match():
    redactor = Redactor(KEY, patterns=[r"ghp_[A-Za-z0-9]{8,}", r"corp-pw=(?P<secret>\S+)"])
    text = "token ghp_abcdEFGH1234 then corp-pw=hunter22 done"
    assert redactor.text(text) == f"token {T('ghp_abcdEFGH1234')} then corp-pw={T('hunter22')} done"
    plain = "nothing for the patterns here"
    assert redactor.text(plain) is plain


def test_an_operator_pattern_never_touches_a_token():
    redactor = Redactor(KEY, patterns=[r"[0-9a-f]{8}"])
    text = "deadbeef and --api-key sk-test-1"
    out = redactor.text(text)
    assert out == f"{T('deadbeef')} and --api-key {T('sk-test-1')}" and redactor.text(out) == out


def test_constructor_refuses_a_bad_pattern():
    with pytest.raises(ValueError, match="catastrophic backtracking"):
        Redactor(KEY, patterns=["(a|aa)+"])


# -- tokens ---------------------------------------------------------------------------------------

def test_token_shape_same_secret_same_token_other_key_other_token():
    token = T("sk-test-1")
    assert TOKEN.fullmatch(token) and is_token(token)
    assert Redactor(KEY).token("sk-test-1") == token  # two incidents, one key: comparable
    assert Redactor(b"another-key").token("sk-test-1") != token
    assert T("sk-test-2") != token


def test_one_secret_one_token_whichever_rule_finds_it():
    secret = HF
    outs = [R.text(f"--hf-token {secret}"), R.text(f"export HF_TOKEN={secret}"), R.text(f"{{'hf_token': '{secret}'}}"),
            R.text(f"loaded {secret}"), Redactor(KEY, known=[secret]).text(f"x {secret} y"),
            R.argv(["--hf-token", secret])[1], R.env({"HF_TOKEN": secret})["HF_TOKEN"]]
    assert {TOKEN.search(o)[0] for o in outs} == {T(secret)}


CASES = [
    "vllm serve m --api-key sk-test-1 --hf-token=hf_x --max-num-batched-tokens 8192",
    "non-default args: {'api_key': ['sk-test-1', 'sk-test-2'], 'max_model_len': 8192}",
    "args: Namespace(api_key='sk-test-1', hf_token=None, allow_credentials=False)",
    "export OPENAI_API_KEY=\"abc def\"; curl -H 'Authorization: Bearer sk-test-3' https://u:pw@h/x",
    f"Authorization: Basic Zm9vOmJhcg== and {HF} and password: hunter22",
    "MAX_TOKENS=512 KeyError: 'x' --tokenizer foo",
]


@pytest.mark.parametrize("text", CASES + [read("secrets_vllm_startup.log"), read("secrets_vllm_namespace.log")])
def test_idempotent(text):
    redactor = Redactor(KEY, patterns=[r"sk-[a-z]+-\d"], known=["hunter22", "abc def"])
    once = redactor.text(text)
    assert redactor.text(once) == once
    assert (once == text) == text.startswith("MAX_TOKENS")  # the one case without a secret


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(CASES + ["", " ", "\n", "'", '"', "=", ": ", "--", "hf_", "x"]), max_size=8))
def test_idempotent_on_any_mix_of_the_cases(parts):
    text = "".join(parts)
    once = R.text(text)
    assert R.text(once) == once


def test_nothing_matched_returns_the_very_same_string():
    for text in ("Free memory on device (3.2/80.0 GiB) on startup", "",
                 read("secrets_vllm_startup.log").split("non-default args")[0],
                 (SAMPLES.parent / "observer/samples/real/healthy-startup.log").read_text(encoding="utf-8")):
        assert R.text(text) is text
    redacted = R.text(CASES[0])
    assert R.text(redacted) is redacted


def test_a_long_text_is_searched_line_by_line_with_the_same_result():
    only_token = ["--token abc123", "HUGGING_FACE_HUB_TOKEN: xyz789", "max_num_batched_tokens=8192 tokenizer=x"]
    lines = (CASES + only_token + [read("secrets_vllm_namespace.log")]) * 40
    long_text = "\n".join(lines)
    assert len(long_text) > 4096
    assert R.text(long_text) == "\n".join(R.text(line) for line in lines)
    unicode_text = "█▄ banner\n" * 300 + CASES[0]
    assert R.text(unicode_text) == "█▄ banner\n" * 300 + R.text(CASES[0])


# -- argv, env, value ------------------------------------------------------------------------------

def test_argv():
    args = ["vllm", "serve", "--hf-token", "hf_x", "org/model", "--api-key", "k1", "k2", "--port", "8000",
            "--token=abc", "--max-num-batched-tokens", "8192", "--tokenizer", "foo"]
    assert R.argv(args) == ["vllm", "serve", "--hf-token", T("hf_x"), "org/model", "--api-key", T("k1"), T("k2"),
                            "--port", "8000", f"--token={T('abc')}", "--max-num-batched-tokens", "8192",
                            "--tokenizer", "foo"]
    assert R.argv(("--api-key", "sk-test-1")) == ["--api-key", T("sk-test-1")]
    assert R.argv(["--allow-credentials", "org/model"]) == ["--allow-credentials", "org/model"]


def test_env():
    env = {"HF_TOKEN": "hf_x", "AUTH_HEADER": "Bearer sk-test-1", "MAX_TOKENS": "5", "PATH": "/usr/bin",
           "VLLM_LOGGING_CONFIG": "--api-key sk-test-2", "EMPTY_TOKEN": ""}
    assert R.env(env) == {"HF_TOKEN": T("hf_x"), "AUTH_HEADER": f"Bearer {T('sk-test-1')}", "MAX_TOKENS": "5",
                          "PATH": "/usr/bin", "VLLM_LOGGING_CONFIG": f"--api-key {T('sk-test-2')}", "EMPTY_TOKEN": ""}


class Launch(msgspec.Struct, frozen=True, kw_only=True):
    argv: list[str]
    env: dict[str, str] = {}
    port: int = 8000


class Source(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    path: str | None = None


class Happened(msgspec.Struct, frozen=True, kw_only=True):
    source: Source
    launch: Launch
    evidence: list[str] = []
    numbers: dict[str, float] = {}
    pair: tuple[str, str] = ("a", "b")


def test_value_walks_a_nested_struct_and_rebuilds_only_what_changed():
    event = Happened(source=Source(kind="file", path="/var/log/vllm.log"),
                     launch=Launch(argv=["vllm", "serve", "--api-key", "sk-test-1"], env={"HF_TOKEN": "hf_x"}),
                     evidence=["(APIServer pid=1) INFO non-default args: {'api_key': ['sk-test-2'], "
                               "'max_model_len': 8192}"],
                     numbers={"max_model_len": 8192.0})
    out = R.value(event)
    assert out.launch.argv == ["vllm", "serve", "--api-key", T("sk-test-1")]
    assert out.launch.env == {"HF_TOKEN": T("hf_x")}
    assert out.evidence == [f"(APIServer pid=1) INFO non-default args: {{'api_key': ['{T('sk-test-2')}'], "
                            f"'max_model_len': 8192}}"]
    assert out.source is event.source and out.numbers is event.numbers and out.pair is event.pair
    assert event.launch.argv[3] == "sk-test-1"  # the original is not touched
    clean = Happened(source=Source(kind="stdin"), launch=Launch(argv=["vllm", "serve", "m"]), evidence=["ok"])
    assert R.value(clean) is clean


def test_value_on_plain_containers_and_other_types():
    data = {"api_key": ["k1", "k2"], "password": "p", "nested": ({"token": "t1"},), 3: "--api-key sk-test-1",
            "count": 5, "when": None}
    out = R.value(data)
    assert out == {"api_key": [T("k1"), T("k2")], "password": T("p"), "nested": ({"token": T("t1")},),
                   3: f"--api-key {T('sk-test-1')}", "count": 5, "when": None}
    for same in (5, 2.5, None, b"--api-key x", ("a", "b"), ["x"], {"a": "b"}):
        assert R.value(same) is same


# -- operator patterns -----------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", [
    r"(a|aa)+", r"(a+)+", r"(\w*)*", r"(?P<x>(a|aa)+)+b", r"(.*a){20}", r"(?:\s*\S+)+$", r"((ab|a)c?)*d",
])
def test_check_pattern_refuses_catastrophic_backtracking_fast(pattern, monkeypatch):
    steps = _count_analysis_steps(monkeypatch)
    with pytest.raises(ValueError, match="^prone to catastrophic backtracking: "):
        check_pattern(pattern)
    assert sum(steps.values()) <= len(pattern), steps


def test_check_pattern_answers_fast_on_a_long_hostile_pattern(monkeypatch):
    pattern = ("(?:x|xy)" * 120)[:990] + "(a|aa)+"
    steps = _count_analysis_steps(monkeypatch)
    with pytest.raises(ValueError, match="catastrophic backtracking"):
        check_pattern(pattern)
    assert len(pattern) <= 1000 and sum(steps.values()) <= len(pattern), steps


def _count_analysis_steps(monkeypatch) -> dict[str, int]:
    """Counts the calls of the checker's own analysis of the parse tree (each recursive step goes
    through the module's name, so every one is counted): "answers fast" as a bound on its work, at
    most one step per character of the pattern, not as a time that a loaded machine may exceed."""
    import selfheal.schemas.redaction as redaction

    steps: dict[str, int] = {}
    for name in ("_scan", "_first_chars", "_overlap", "_begins_unbounded_in"):
        real = getattr(redaction, name)

        def counted(*args, _real=real, _name=name):
            steps[_name] = steps.get(_name, 0) + 1
            return _real(*args)
        monkeypatch.setattr(redaction, name, counted)
    return steps


@pytest.mark.parametrize("pattern", [
    r"sk-[A-Za-z0-9]+", r"corp-pw=(?P<secret>\S+)", r"(?:foo|bar)+-\d+", r"ghp_[A-Za-z0-9]{36}", r"(?i)token=\w+",
])
def test_check_pattern_accepts_one_level_of_repetition(pattern):
    assert check_pattern(pattern).pattern == pattern


@pytest.mark.parametrize("pattern, message", [
    ("(", "not a valid regular expression: missing ), unterminated subpattern at position 0"),
    ("x" * 1001, "the pattern is 1,001 characters long, above the limit of 1,000"),
    ("a*", "the pattern matches the empty string, so it would match everywhere"),
])
def test_check_pattern_says_what_is_wrong(pattern, message):
    with pytest.raises(ValueError) as err:
        check_pattern(pattern)
    assert str(err.value) == message


# -- configuration ---------------------------------------------------------------------------------

def test_config_patterns_are_checked_and_name_their_index():
    assert parse_settings("").redaction.patterns == []
    settings = parse_settings('[redaction]\npatterns = ["sk-[a-z0-9]+", "corp=(?P<secret>\\\\S+)"]')
    assert settings.redaction.patterns == ["sk-[a-z0-9]+", "corp=(?P<secret>\\S+)"]
    with pytest.raises(ConfigError) as err:
        parse_settings('[redaction]\npatterns = ["sk-[a-z0-9]+", "(a|aa)+"]')
    assert str(err.value).startswith("selfheal.toml: redaction.patterns: ")
    assert "redaction.patterns[1]: prone to catastrophic backtracking" in str(err.value)
    with pytest.raises(ConfigError, match=r"redaction\.patterns\[0\]: not a valid regular expression"):
        parse_settings('[redaction]\npatterns = ["(unclosed"]')


def test_known_secrets_from_the_settings():
    settings = parse_settings("""
[deployments.chat]
canary_backend = "vllm"
command = ["vllm", "serve", "{model}", "--port", "{port}", "--api-key", "sk-test-canary", "k2-second",
           "--hf-token={hf}", "--max-num-batched-tokens", "8192"]
env = {HF_TOKEN = "hf_deploy_secret", MAX_TOKENS = "512", AUTH_HEADER = "Bearer sk-test-header", EMPTY_KEY = ""}

[deployments.chat.reload]
method = "restart"
argv = ["systemctl", "restart", "vllm", "--token", "reload-token-1"]

[deployments.batch]
serve_command = ["vllm", "serve", "{model}", "--config", "{config_file}", "--api-key=sk-test-serve"]
""")
    assert known_secrets(settings) == ["hf_deploy_secret", "sk-test-header", "sk-test-canary", "k2-second",
                                       "reload-token-1", "sk-test-serve"]
    assert known_secrets(parse_settings("")) == []
