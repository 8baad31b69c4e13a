"""Issue 18.6: the operator's vLLM YAML survives every commit and rollback.

The files here are the shapes the byte-exact line edits cannot take (a flow-style root, a
tunable behind an alias or holding an anchor, a tunable's value on the next line, an indented
document); each carries comments, anchors, flow-style tables, block scalars and a key order
that must come out of a commit as they went in, and a rollback must give back the exact bytes.
Everything runs on real files through `commit` and `restore_previous`.
"""
from __future__ import annotations

import re

import pytest
import yaml

from selfheal.edges.vllm_config import commit, render_plan, restore_previous
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import TUNABLE, ServingConfig

BOUNDS = ActuatorBounds()
FIRST = ServingConfig(gpu_memory_utilization=0.8, max_model_len=4096, max_num_seqs=8,
                      max_num_batched_tokens=2048, enforce_eager=False)
SECOND = FIRST.changed(max_num_seqs=6, gpu_memory_utilization=0.75)

#: what every block-style shape below shares: it must come through each commit unchanged
SHARED = """\
defaults: &defaults {dtype: bfloat16, seed: 0}   # shared by two tables
override-generation-config: *defaults
chat-template: |
  {% for m in messages %}{{ m.content }}
  {% endfor %}
hf-overrides: {rope_scaling: {rope_type: llama3, factor: 8.0}}
"""

SHAPES = {
    "a tunable behind an alias": (
        "# vLLM config for chat, owned by ops\n"
        "model: meta-llama/Llama-3.1-8B-Instruct  # pinned\n"
        "seqs: &seqs 4   # the team's default\n"
        "max-num-seqs: *seqs  # follows the default\n"
        + SHARED + "# closing remark\n"),
    "a tunable holding an anchor others use": (
        "# vLLM config for chat, owned by ops\n"
        "max-num-seqs: &seqs 4  # seqs\n"
        "scheduler-seqs: *seqs\n"
        + SHARED),
    "a tunable's value on the next line": (
        "# vLLM config for chat, owned by ops\n"
        "model: m\n"
        "max-model-len:\n"
        "    2048   # folded onto its own line\n"
        "compilation-config:\n"
        "    level: 3   # nested, indented by four\n"
        "    cudagraph_capture_sizes:\n"
        "        - 1\n"
        "        - 2\n"
        + SHARED.replace("\n  {%", "\n    {%")  # a file indented by four throughout
        + "served-model-name: chat\n# closing remark\n"),
    "an explicit document": (
        "# before the document\n"
        "---\n"
        "# vLLM config for chat, owned by ops\n"
        "model: m\n"
        + SHARED + "...\n"),
}

FLOW = ("# vLLM config for chat, owned by ops\n"
        "{model: m, max-num-seqs: 4, dtype: 'half', hf-overrides: {rope_scaling: {factor: 2.0}}}  # one line\n"
        "# closing remark\n")


def comments(text: str) -> list[str]:
    """Every comment of a file, as written (a `#` after a blank or at a line's start)."""
    return [m.group(1).rstrip() for m in re.finditer(r"(?:^|[ \t])(#[^\n]*)", text, re.M)
            if not m.group(1).startswith("#}")]


def others(text: str) -> dict:
    data = yaml.safe_load(text)
    return {k: v for k, v in data.items() if k.replace("-", "_") not in TUNABLE}


def tunables(text: str) -> dict:
    data = yaml.safe_load(text)
    return {k.replace("-", "_"): v for k, v in data.items() if k.replace("-", "_") in TUNABLE}


def assert_kept(original: str, now: str, config: ServingConfig) -> None:
    assert tunables(now) == config.as_dict()
    assert others(now) == others(original)
    assert list(others(now)) == list(others(original))  # key order
    for comment in comments(original):
        assert now.count(comment) == original.count(comment), (comment, now)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_commit_keeps_comments_anchors_flow_style_and_block_scalars(tmp_path, shape):
    original = SHAPES[shape]
    path = tmp_path / "vllm.yaml"
    path.write_text(original)
    first = commit(path, FIRST, BOUNDS)
    assert first.method == "round-trip"
    after_first = path.read_text()
    assert_kept(original, after_first, FIRST)
    assert "&defaults {dtype: bfloat16, seed: 0}" in after_first and "config: *defaults" in after_first
    assert "hf-overrides: {rope_scaling: {rope_type: llama3, factor: 8.0}}" in after_first
    block = re.search(r"\nchat-template: \|\n(?: +.*\n)+", original).group(0)
    assert block in after_first  # the block scalar, byte for byte

    second = commit(path, SECOND, BOUNDS)
    assert_kept(original, path.read_text(), SECOND)
    assert second.changed

    restore_previous(path)  # rolls back the second commit: the first's bytes exactly
    assert path.read_text() == after_first
    assert commit(path, FIRST, BOUNDS).changed is False  # and committing it again changes nothing


@pytest.mark.parametrize("original", [FLOW, FLOW.replace("  # one line", "")])
def test_a_flow_style_root_stays_one_line_with_the_comments_around_it(tmp_path, original):
    path = tmp_path / "vllm.yaml"
    path.write_text(original)
    assert commit(path, FIRST, BOUNDS).method == "round-trip"
    text = path.read_text()
    assert_kept(original, text, FIRST)
    lines = text.splitlines()
    assert lines[0] == "# vLLM config for chat, owned by ops" and lines[-1] == "# closing remark"
    assert lines[1].startswith("{model: m, max-num-seqs: 8, dtype: 'half', hf-overrides: {rope_scaling: {factor: 2.0}}")
    assert re.search(r"enforce-eager: false\}( +# one line)?$", lines[1]) and len(lines) == 3
    restore_previous(path)
    assert path.read_text() == original


def test_a_tunables_own_comments_stay_on_its_line():
    text = render_plan(SHAPES["a tunable behind an alias"], FIRST).text
    # ruamel.yaml keeps a comment's column where it can
    assert re.search(r"\nmax-num-seqs: 8 +# follows the default\n", text), text
    assert "\nseqs: &seqs 4   # the team's default\n" in text


def test_an_anchor_on_a_tunable_moves_to_the_key_that_still_uses_it():
    text = render_plan(SHAPES["a tunable holding an anchor others use"], FIRST).text
    assert re.search(r"\nmax-num-seqs: 8 +# seqs\n", text), text
    assert "\nscheduler-seqs: &seqs 4\n" in text


def test_appended_keys_go_above_the_files_closing_comment_and_the_indent_is_kept():
    text = render_plan(SHAPES["a tunable's value on the next line"], FIRST).text
    assert text.endswith("enforce-eager: false\n# closing remark\n"), text
    assert "\ncompilation-config:\n    level: 3   # nested, indented by four\n" in text
    assert "\n    cudagraph_capture_sizes:\n        - 1\n        - 2\n" in text


def test_the_explicit_document_marker_and_the_comment_above_it_stay():
    text = render_plan(SHAPES["an explicit document"], FIRST).text
    assert text.startswith("# before the document\n---\n# vLLM config for chat, owned by ops\nmodel: m\n")


def test_plain_values_keep_their_text_so_vllm_reads_them_as_before():
    # YAML 1.1 (PyYAML, so vLLM) and 1.2 (ruamel.yaml) read these differently, and a float's
    # last digit could be lost; kept as text, each reads back in PyYAML as it did
    odd = {"trust-remote-code": "yes", "seed": "010", "scale": "1e3", "timeout": "1:20",
           "tokenizer": "~", "rope-theta": "1.951689272781608e+59", "swap-space": "0o10"}
    original = "# odd values\n{max-num-seqs: 4, " + ", ".join(f"{k}: {v}" for k, v in odd.items()) + "}\n"
    plan = render_plan(original, FIRST)
    assert plan.method == "round-trip"
    for key, value in odd.items():
        assert f"{key}: {value}," in plan.text
    assert_kept(original, plan.text, FIRST)


def test_a_key_given_twice_falls_back_to_a_rewrite_that_keeps_what_vllm_reads(tmp_path):
    # ruamel.yaml keeps the first of two equal keys, PyYAML (and vLLM) the last: the round trip
    # would change what vLLM runs, so PyYAML writes the mapping anew (comments lost)
    original = "# twice\n{port: 8000, port: 9000, max-num-seqs: 4}\n"
    plan = render_plan(original, FIRST)
    assert plan.method == "rewrite"
    assert yaml.safe_load(plan.text)["port"] == 9000 and tunables(plan.text) == FIRST.as_dict()
