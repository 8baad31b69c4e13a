"""render and validate: selfheal's keys set, every other key, comment and line kept."""
from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from selfheal.edges.vllm_config import render, render_plan, validate
from selfheal.schemas.config import ConfigError
from selfheal.schemas.serving import TUNABLE, ServingConfig

CONFIG = ServingConfig(gpu_memory_utilization=0.85, max_model_len=4096, max_num_seqs=8,
                       max_num_batched_tokens=1024, enforce_eager=True)

EXISTING = """\
# vLLM config for the chat deployment
model: Qwen/Qwen2.5-0.5B-Instruct   # pinned by ops
host: 127.0.0.1
port: 8000

# memory
gpu-memory-utilization: 0.7   # was 0.6
max_model_len: 2048
enforce_eager: false
served-model-name: chat
hf-overrides: {rope_scaling: {type: dynamic, factor: 2.0}}
"""


def tunables(text: str) -> dict:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return {k.replace("-", "_"): v for k, v in data.items() if k.replace("-", "_") in TUNABLE}


def test_line_based_keeps_every_other_line_comment_and_order():
    plan = render_plan(EXISTING, CONFIG)
    assert plan.method == "lines"
    lines = plan.text.splitlines()
    old = EXISTING.splitlines()
    # the file's own lines, in order, with only the tunables' values changed
    assert lines[:len(old)] == [
        "# vLLM config for the chat deployment",
        "model: Qwen/Qwen2.5-0.5B-Instruct   # pinned by ops",
        "host: 127.0.0.1",
        "port: 8000",
        "",
        "# memory",
        "gpu-memory-utilization: 0.85   # was 0.6",
        "max_model_len: 4096",
        "enforce_eager: true",
        "served-model-name: chat",
        "hf-overrides: {rope_scaling: {type: dynamic, factor: 2.0}}",
    ]
    # missing keys appended in vLLM's dashed spelling
    assert lines[len(old):] == ["max-num-seqs: 8", "max-num-batched-tokens: 1024"]
    assert tunables(plan.text) == CONFIG.as_dict()
    before, after = yaml.safe_load(EXISTING), yaml.safe_load(plan.text)
    for key, value in before.items():
        if key.replace("-", "_") not in TUNABLE:
            assert after[key] == value


def test_both_spellings_keep_the_files_spelling():
    text = "max-model-len: 1024\nmax_num_seqs: 4\ngpu_memory_utilization: 0.6\nenforce-eager: yes\n"
    out = render(text, CONFIG)
    assert out.startswith("max-model-len: 4096\nmax_num_seqs: 8\ngpu_memory_utilization: 0.85\nenforce-eager: true\n")
    assert "max_model_len" not in out and "max-num-seqs" not in out
    assert tunables(out) == CONFIG.as_dict()


def test_a_key_present_in_both_spellings_gets_the_value_in_both():
    out = render("max-model-len: 1024\nmax_model_len: 2048\n", CONFIG)
    data = yaml.safe_load(out)
    assert data["max-model-len"] == data["max_model_len"] == 4096


def test_quoted_values_and_crlf_and_no_final_newline():
    out = render('model: m\r\nmax-num-seqs: "4"  # quoted\r\nport: 8000', CONFIG)
    assert out.startswith("model: m\r\nmax-num-seqs: 8  # quoted\r\nport: 8000\r\n")
    assert tunables(out) == CONFIG.as_dict()


def test_no_existing_file_and_empty_file():
    for existing in (None, "", "\n"):
        plan = render_plan(existing, CONFIG)
        assert plan.method == "new"
        assert plan.text.splitlines()[0] == "gpu-memory-utilization: 0.85"
        assert tunables(plan.text) == CONFIG.as_dict()


def test_comments_only_file_keeps_its_comments():
    out = render("# managed by ops\n", CONFIG)
    assert out.startswith("# managed by ops\n")
    assert tunables(out) == CONFIG.as_dict()


@pytest.mark.parametrize("existing", [
    "{model: m, max-model-len: 1024, port: 8000}",          # flow style
    "model: m\nbase: &n 4\nmax-num-seqs: *n\n",              # an alias
    "model: m\nmax-num-seqs: &n 4\nother: *n\n",             # an anchor others use
    "model: m\nmax-model-len:\n  2048\n",                    # value on the next line
    "  model: m\n  port: 1\n",                               # an indented document
    "---\nmodel: m\n...\n",                                  # explicit document end
])
def test_fallback_round_trip_keeps_every_key(existing):
    plan = render_plan(existing, CONFIG)
    assert plan.method == "round-trip"
    assert tunables(plan.text) == CONFIG.as_dict()
    before, after = yaml.safe_load(existing), yaml.safe_load(plan.text)
    assert list(after)[:1] == list(before)[:1]  # order kept
    for key, value in before.items():
        if key.replace("-", "_") not in TUNABLE:
            assert after[key] == value


def test_a_tag_or_unused_anchor_on_a_value_is_replaced_with_it():
    # the node's span starts at its tag or anchor, so both go with the old value
    for existing in ("model: m\nmax-model-len: !!int 1024  # c\n", "model: m\nmax-model-len: &x 1024  # c\n"):
        plan = render_plan(existing, CONFIG)
        assert plan.method == "lines"
        assert plan.text.startswith("model: m\nmax-model-len: 4096  # c\n")


def test_render_is_idempotent():
    for existing in (EXISTING, None, "{a: 1}"):
        once = render(existing, CONFIG)
        assert render(once, CONFIG) == once


def test_render_refuses_wrong_types_and_bad_existing():
    with pytest.raises(ConfigError, match="max_num_seqs"):
        render(None, CONFIG.changed(max_num_seqs="8"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        render("a: [1,\n", CONFIG)


def test_validate_names_file_line_and_column():
    with pytest.raises(ConfigError) as err:
        validate("model: m\nport: 8000\n  bad: indent\n", "/etc/vllm/chat.yaml")
    assert str(err.value).startswith("/etc/vllm/chat.yaml:3:6: not valid YAML")
    with pytest.raises(ConfigError, match=r"^x\.yaml:2:1: a vLLM config must be a mapping .* list"):
        validate("# list\n- a\n- b\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"^x\.yaml:1:4: not valid YAML"):
        validate("a: \x01", "x.yaml")
    assert validate("", "x.yaml") == {}
    assert validate("a: 1\n", "x.yaml") == {"a": 1}


_keys = st.sampled_from(["model", "port", "host", "dtype", "seed", "tensor-parallel-size"])
_values = st.one_of(st.integers(-5, 10**6), st.text("abcxyz /:.", min_size=1, max_size=12), st.booleans())


@settings(max_examples=60, deadline=None)
@given(others=st.dictionaries(_keys, _values, max_size=5),
       present=st.lists(st.sampled_from(TUNABLE), unique=True), underscore=st.booleans(),
       seqs=st.integers(1, 512), eager=st.booleans(), gmu=st.sampled_from([0.6, 0.65, 0.7, 0.9, 1.0]))
def test_property_tunables_set_and_others_kept(others, present, underscore, seqs, eager, gmu):
    doc = dict(others)
    for name in present:
        doc[name if underscore else name.replace("_", "-")] = getattr(ServingConfig(), name)
    existing = yaml.safe_dump(doc, sort_keys=False) if doc else None
    config = ServingConfig(max_num_seqs=seqs, enforce_eager=eager, gpu_memory_utilization=gmu)
    plan = render_plan(existing, config)
    assert plan.method in ("new", "lines")
    assert tunables(plan.text) == config.as_dict()
    after = yaml.safe_load(plan.text)
    assert {k: v for k, v in after.items() if k.replace("-", "_") not in TUNABLE} == others
    assert render(plan.text, config) == plan.text
