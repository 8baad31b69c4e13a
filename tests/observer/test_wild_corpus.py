"""The observer on real vLLM logs from public threads (samples/wild, labelled from the threads,
never from what the observer prints), scored by bench/wild.py, and the loop's policy for each
confidence a finding states.

Floors: the ones this code meets are asserted (a change that loses excerpts fails here); the
issue's own floors (kind 0.97, numbers and direction 0.95) are one strict xfail until met."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import selfheal

ROOT = Path(__file__).resolve().parents[2]
WILD = ROOT / "tests" / "observer" / "samples" / "wild"
_spec = importlib.util.spec_from_file_location("wild_bench", ROOT / "bench" / "wild.py")
wild = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wild)

CATEGORIES = {"prefix", "abridged", "raise_site", "accounting", "truncated", "runtime", "wording", "plain"}
# what this code reaches on the corpus (bench/wild.py); raise them as the observer improves. The
# corpus grew by 46 excerpts mined blind (never tuned against before they were scored): kind
# 0.9477 -> 0.9076 on them, 0.913 after the mechanisms they showed missing; 29 more (a second blind
# round, 273 in all): 0.913 -> 0.884, 0.915 after theirs; 20 more (a third, 293): a full cache with
# nothing waiting is no pressure (the issue's "near 100% and a growing queue"), which two labels of
# round 1 (413, 962) do not follow: 0.908; 16 more (a fourth, 309): 0.907; 60 more (a fifth, 369):
# 0.890, 0.900 after theirs (a paste's artifacts undone, another letter case, newest first); 46 more
# (a sixth, 414, mostly prose retellings and V1-era downstream stacks): 0.8716 -> 0.875; 39 more
# (a seventh, 453): 0.82 and 0.69 at first on theirs, 0.877 on all after theirs; 16 more (an
# eighth, 469): 0.8724 (numbers 0.8782, under its floor), 0.890 (numbers 0.893, direction 0.872)
# after tracebacks cut in a dummy batch, a worker's error cut after the block count, the capture
# wrappers' own lines, Ray's late summaries and the startup check retold were read; 24 more (a
# ninth, 493, from forks and applications: 10 of 18 failures right at first): 0.873 (direction
# 0.851), then 0.887 (numbers 0.898, direction 0.865) after accelerator OOMs stated bare, PyTorch's
# OOM retold, the allocator's warning, the startup check's family and vllm-metal's KV check; 32
# more (a tenth, 525, mostly from repositories' notes, blogs and forks: 9 of 24 failures right at
# first, one excerpt dropped because the search index, not its poster, had cut it inside capture):
# 0.8549, then 0.868 (numbers 0.877, direction 0.844) after a client's max_tokens filling the
# context, the allocator's NVML assert on its OOM path, the Mamba check quoted from "exceeds" on
# and the MPS allocator's OOM dropped (vLLM has no MPS platform; a blind look-alike was another
# stack's). What is left of the round is prose, single refusals and single stats lines; 37 more
# (an eleventh, 562: 14 of 28 failures right at first, 11 of 15 of the startup and config kinds;
# 9 of its 14 misses are single refused prompts, which the issue counts only when sustained):
# 0.8428, then 0.845 (numbers 0.853, direction 0.818) after XLA's TPU runtime out of HBM; 42
# more (a twelfth, 604: 16 of 27 failures right at first): 0.8295, then 0.841 (numbers 0.848,
# direction 0.811) after Tenstorrent's DRAM OOM, PyTorch's OOM retold under its exception's name,
# and the derived-length and swap-space checks quoted up to their first clause; 22 more (a
# thirteenth, 626: 10 of 13 failures right at first): 0.8389, then 0.841 (numbers 0.848,
# direction 0.814) after the Mamba align-mode assertion; 31 more (a fourteenth, 657: 10 of 19
# failures right at first): 0.8301, then 0.834 (numbers 0.846, direction 0.809) after the startup
# check quoted with placeholders and vLLM 0.2's shared-memory limit on max_model_len; 28 more (a
# fifteenth, 685: typical operators' logs from vLLM's threads and its ecosystem, 15 of 19 failures
# right at first, every look-alike silent; four more were dropped, cut by the search index, not
# by their posters): 0.878 (numbers 0.868, direction 0.855) after the mechanisms of stop 28 (the
# KV check quoted from its middle, raise sites by their line in each release, the derived-length
# error elided, a plugin's bound, the profile run opened by the weights' report, XLA's SMEM,
# CANN's allocation failure, OOMs retold by a person); 21 more (a sixteenth, 706, scored against
# those mechanisms before any rule saw them: 12 of 13 failures right, 7 of 8 look-alikes silent,
# the eighth a hang in capture, since read as such): 0.879 (numbers 0.867, direction 0.853);
# 12 more (a seventeenth, 718, all right before any rule saw them) and 17 more (an eighteenth, 735:
# 7 of 8 failures and 8 of 9 look-alikes right at first; then every one, after vllm-metal's
# longer breakdown and a capture line that a wrapper repeats read as a quote): 0.882 (numbers 0.87,
# direction 0.857); 6 more (a nineteenth, 741: 2 of 2 failures and 3 of 4 look-alikes right at
# first, every one after a cut whose wrapper quotes a worker's device error was read as another
# cause): 0.883 (numbers 0.871, direction 0.858); then a runtime line alone (one refused prompt,
# one stats line of a full cache with requests waiting) told as an "unsustained" finding, alerted
# and never tuned, where the log shows nothing else (the threads' labels name 16 of 19 such
# refusals a failure, and two look-alikes of the same shape are read silent by what tells them:
# a limit below the max_model_len the paste shows, a prompt exactly as long as the limit), and
# two refusal wordings more: 0.920 (numbers 0.907, direction 0.889); and a queue held by the
# sequence cap (stats lines with every slot of vLLM's default max_num_seqs in use, requests
# waiting and the KV cache with room): 0.924 (numbers 0.911, direction 0.893); 38 more (a
# twentieth, 779: forums, blogs and posts in other languages, and the threads of programs that
# run vLLM for something else; scored against those mechanisms before any rule saw them: 23 of 23
# failures right, 12 of 15 look-alikes silent, the three that spoke a capture notice quoted in
# prose, now read as a quote, a log cut at the CUDA-graph profiler, and another program's OOM):
# 0.927 (numbers 0.913, direction 0.894); 39 more (a twenty-first, 818: look-alikes sought on
# purpose, and failures under deployment tools; 16 of 16 failures right and 17 of 18 then 4 of 5
# look-alikes silent before any rule saw them; between its two halves, PyTorch's OOM under another
# program's traceback with no trace of vLLM became that program's): 0.929 (numbers 0.916,
# direction 0.896); 40 more (a twenty-second, 858: look-alikes and failures on other platforms,
# Tenstorrent, Neuron, XPU, TPU, ROCm, Metal, and from blogs and forums; before any rule saw them
# 17 of 20 failures right and 20 of 20 look-alikes silent; then a comment mark that a wrapped
# record repeats taken out of its message, the Neuron runtime's allocation failure, Intel XPU's
# OOM with no free figure, and a fit of 0 or less no setting, so an alert): 0.930 (numbers 0.915,
# the new labels' first of three repeated failures where the primary is the last; direction 0.900);
# 27 more (a twenty-third, 885: the threads of RL, evaluation and data tools that run vLLM, and
# look-alikes from vLLM's own threads of 0.8-0.34; before any rule saw them 3 of 3 failures right
# and 23 of 24 look-alikes silent, the one that spoke an error naming ACL's capture call, which
# opened the capture phase and so hid its own cause): 0.930 (numbers 0.915, direction 0.901);
# 8 more (a twenty-fourth, 893: vLLM's threads of 0.11-0.34 on 2026 cards and models, and a
# backport fork; 4 of 4 failures right and 4 of 4 look-alikes silent before any rule saw them):
# 0.931 (numbers 0.916, direction 0.901); 24 more (a twenty-fifth, 917: posts in other languages
# and outside GitHub, and the threads of vLLM's platform repositories; 10 of 15 failures right and 9
# of 9 look-alikes silent before any rule saw them; then Gaudi's and torch_npu's workspace OOMs and
# the Spyre plugin's warmup check read; left: an error an aggregator cut after its first words, a
# pytest frame cut before the error, a translated OOM whose thread lowered other settings): 0.929
# (numbers 0.916, direction 0.899); 21 more (a twenty-sixth, 938: vLLM's pull requests, model
# repositories and front-ends; scored against the code of this stop's end before any rule saw them:
# 9 of 9 failures right and 12 of 12 look-alikes silent): 0.930 (numbers 0.917, direction 0.899);
# 27 more (a twenty-seventh, 965: Q&A pages, guides, READMEs and blogs, and the threads of programs
# that embed vLLM; scored against the code of stop 32 before any rule saw them: 9 of 10 failures
# right, 15 of 17 look-alikes silent, the two that spoke a guide and a README naming the cache-block
# error in prose, STATED_BY_DESIGN below; the miss is an inductor bounds assert of a RoPE table
# outgrown, and one excerpt retold the weights OOM's numbers on lines of their own): 0.930
# (numbers 0.915, direction 0.899); 24 more (a twenty-eighth, 989: vLLM's forum, model cards,
# release notes, and threads in Chinese and of hardware plugins; 11 of 13 failures right and 11 of
# 11 look-alikes silent before any rule saw them; then the KV check retold with its middle elided
# and the available figure before the word, and a number ended by the CJK letters of the
# poster's words joined to its line): 0.931 (numbers 0.915, direction 0.8995); 73 more (a
# twenty-ninth, 1062: Chinese pages and a 2026 benchmark PR, then run logs and notes committed to
# repositories (notebook outputs, server logs, agents' ledgers, READMEs), each folder scored before
# any rule changed for it: 40 of 53 failures right and 18 of 20 look-alikes silent; then Markdown
# bold taken off a retold figure, the KV check's estimate as a sentence of its own or after an
# elision, the CPU backend's KV budget as its available KV memory, the server's "Starting vLLM
# server on" (0.2x+) as ready, the allocator's retried warnings dropped where the server comes up,
# the CPU startup check retold, the KV check elided up to its available memory, the derived length
# elided without its key, and the startup check from its middle on: 45 of 53 and 20 of 20; most of
# what is left retells an error in prose): 0.925 (numbers 0.903, direction 0.8956); 37 more (a
# thirtieth, 1099: run logs committed to repositories, found by their file names; 22 of 24 failures
# right and 12 of 13 look-alikes silent before any rule saw them; the one that spoke, a README's
# heading naming the startup error by its two ends, is no quote for the check's tail rule now):
# 0.9247 (numbers 0.9051, direction 0.892); 45 more (a thirty-first, 1144: HPC job outputs,
# notebooks' cell outputs, committed logs under new names, and pages; 20 of 23 failures right and
# 20 of 22 look-alikes silent before any rule changed for them; the two that spoke are PyTorch's and
# CUDA's words printed by programs that are not vLLM, STATED_BY_DESIGN below; then Triton's driver
# out of memory read; a committed log that PowerShell wrote as UTF-16 is now read as such): 0.9243
# (numbers 0.903, direction 0.8886); 30 more (a thirty-second and a thirty-third, 1174: notebooks'
# cell outputs, deployment guides, evaluation and training logs; 9 of 9 failures right and 20 of
# 21 look-alikes silent before any rule changed for them; the one that spoke is a trainer's
# out-of-memory error under verl's Ray actor, STATED_BY_DESIGN below): 0.9253 (numbers 0.9011,
# direction 0.8845); 4 more of round 32 (1178: repositories that commit folders of run logs; 1 of
# 1 failure right and 3 of 3 look-alikes silent): 0.9254 (numbers 0.9011, direction 0.8847);
# round 34's 19 (1197: threads of programs that embed vLLM, committed server logs, pages; 3 of 5
# failures' kinds right and 11 of 14 look-alikes silent before any rule changed for them; after,
# 4 of 5 and 12 of 14: VLLMValidationError's refusal wording, and an engine that came up
# withdrawing what its accounting inferred): 0.9245 (numbers 0.8986, direction 0.8814). The new
# failures' figures and directions are a peak chosen by their miner (66 running, not the last
# line's 26), a refusal at the model's own full context (no setting helps) and a queue held flat
# at a max_num_seqs of 8 that no rule reads (a cap other than vLLM's defaults); round 35's 5 (1202:
# committed benchmark and run logs; 4 of 4 look-alikes silent, among them a verl trainer's OOM
# that spoke before a setting's value stopped counting as a trace of vLLM, and the one failure
# missed, a second queue held at a configured max_num_seqs, 64): 0.9233 (numbers 0.8971,
# direction 0.8802); round 36's 23 (1225: notebooks' outputs and committed course logs and
# reports, threads of other engines and of programs that embed vLLM, and 2025-26 V1 threads;
# 12 of 13 failures and 10 of 10 look-alikes right before any rule changed for them, the miss a
# traceback cut at its first lines after the profile run began, now read as cut in the dummy
# batch): 0.9246 (numbers 0.8991, direction 0.881); then a queue held at the max_num_seqs the
# log configured, read by the queue rule bound to that cap (configured.py): 0.927; round 37's 12
# (1237: committed logs and notes of course, hackathon and small projects, and benchmark sweeps'
# server logs; 7 of 8 failures and 5 of 5 look-alikes right before any rule changed for them, the
# miss a fourth queue held at a configured cap, read since; a log two miners found is kept once):
# 0.9279 (numbers 0.8986, direction 0.8807: the new labels call a full cache or a refusal that
# their sources leave unfixed "no setting helps")
FLOORS = {"kind": 0.927, "numbers": 0.898, "direction": 0.880}


@pytest.fixture(scope="module")
def score():
    return wild.score()


def test_the_corpus_is_real_labelled_and_large_enough():
    rows = wild.excerpts()
    failures = [lab for _, _, lab in rows if lab["kind"] != "none"]
    negatives = [lab for _, _, lab in rows if lab["kind"] == "none"]
    assert len(failures) >= 150 and len(negatives) >= 40, (len(failures), len(negatives))
    assert all(lab["source"].startswith(("https://", "http://")) for _, _, lab in rows)  # a public address
    assert all(set(lab["categories"]) <= CATEGORIES and lab["categories"] for _, _, lab in rows)
    kinds = {lab["kind"] for lab in failures}
    assert {"startup_free_memory_below_utilization", "no_kv_cache_memory", "max_model_len_exceeds_kv_cache",
            "cuda_oom_allocation", "batched_tokens_below_model_len", "cuda_graph_oom", "other_config_error"} <= kinds
    assert {c for lab in failures for c in lab["categories"]} >= CATEGORIES - {"plain"}


def test_a_label_file_that_is_wrong_is_named(tmp_path):
    bad = tmp_path / "none"
    bad.mkdir()
    (bad / "001-x.log").write_text("INFO ok\n")
    (bad / "001-x.toml").write_text('kind = "none"\n')
    with pytest.raises(wild.LabelError, match="001-x.toml: missing source"):
        wild.excerpts(tmp_path)


# Look-alikes that speak only at a lower confidence, alerted and never tuned, each named with what
# makes it one. Those that end exactly where a log cut short inside CUDA-graph capture ends: the
# issue (category 5) asks for a lower-confidence finding there, and nothing in their text tells
# them from the real cuts beside them in the corpus (313, 314: the same V0 capture lines, last);
# their threads show the paste simply stopped. And refusals a thread calls healthy where 16 of 19
# threads with the same lines call them a failure: one line is told as unsustained (README). One
# more is a decision, not a drift
LOWER_CONFIDENCE_BY_DESIGN = {
    "none/2051-mlcommons-llama31-8b-capture-advice-how-to-enforce-eager":
        ("truncated", "a how-to question whose paste ends at V0's capture INFO lines"),
    "none/2578-v017-mtp-pr-profiling-override-num-gpu-blocks-0-to-16":
        ("truncated", "a PR's log that stops at V1's CUDA-graph memory profiling, where the search copy broke off"),
    "none/2647-ai-infra-assistant-litellm-400-context-32768-request-33125-tokens":
        ("unsustained", "two refusals of an agent's overflowing context, which its operator let be"),
}
# Look-alikes that speak with a stated finding, each named with why nothing in its text tells it
# from the failures beside it in the corpus. 2582 (a bare CUDA OOM in a fine-tune's bitsandbytes
# traceback) spoke until round 21 showed a second of its kind (a trainer's step), and PyTorch's
# messages under another program's traceback with no trace of vLLM are now its failure. Round 27's
# two are pages that name vLLM's error in running prose, with no log around it; the corpus's
# failures hold the same words retold in prose by people whose server did fail, and the finding is
# an alert (no current configuration is known). A reading of prose as mention or report is not built.
# Round 31's two are PyTorch's and CUDA's own words printed by programs that are not vLLM, with
# nothing around them that names a program the observer could tell (endings.foreign_traceback reads
# Python frames); round 34's two are the same (3754, 3756). Round 33's (3703, a trainer's OOM under verl's Ray actor in a run whose overrides
# name vLLM) spoke until a setting's value and another program's Ray prefix stopped counting as
# traces of vLLM
STATED_BY_DESIGN: dict[str, str] = {
    "none/2902-runaihome-wont-start-guide-tldr-names-errors-in-prose":
        "a troubleshooting guide's summary that names the cache-block error in parentheses inside a sentence",
    "none/2905-pypi-ml-memguard-readme-names-oom-errors":
        "a package's README that opens a sentence with the cache-block error's first two sentences",
    "none/3457-llamacpp-qwen36-27b-mtp-262k-24gb-cuda-graph-oom-not-vllm":
        "llama.cpp's CUDA driver error, 'CUDA error: out of memory', the driver's words as vLLM's workers print "
        "them; only a C source path (ggml) names the program, and vLLM's own C++ paths are as bare",
    "none/3754-tgi-80g-gpu-prefill-oom-18mib-out-of-cache-blocks-not-vllm":
        "text-generation-inference's prefill OOM: PyTorch's message alone on its line, then TGI's Rust router "
        "quoting it; no Python frame names the program",
    "none/3756-freetoken-3060-12g-kv-reserve-131072-oom-128mib-not-vllm":
        "another engine's PyTorch OOM, the message alone as posted, with nothing around it",
    "none/3458-strix-halo-gfx1151-torch-hip-oom-16gib-cap-not-vllm":
        "PyTorch's HIP out-of-memory message from a bare script, whole and alone, as many failures of the corpus "
        "quote vLLM's: no traceback, no program named",
}
SPEAK_BY_DESIGN = set(LOWER_CONFIDENCE_BY_DESIGN) | set(STATED_BY_DESIGN)


def test_no_false_alarm_no_wrong_way_fix_no_crash(score):
    spoke = [m for m in score["misses"] if m.get("want") == "none"]
    assert {m["excerpt"] for m in spoke} <= SPEAK_BY_DESIGN, spoke
    assert all(m["confidence"] == LOWER_CONFIDENCE_BY_DESIGN[m["excerpt"]][0] for m in spoke
               if m["excerpt"] in LOWER_CONFIDENCE_BY_DESIGN), spoke
    assert score["wrong_way"] == 0 and score["crashes"] == 0, score["misses"]


def test_the_floors_this_code_reaches(score):
    for key, floor in FLOORS.items():
        assert score[key] >= floor, (key, score[key], score["misses"])


@pytest.mark.xfail(strict=True, reason="issue 14's floors are not met yet: kind 0.97, numbers and direction 0.95 "
                                       "(bench/wild.py lists every miss)")
def test_the_issues_floors(score):
    assert score["kind"] >= 0.97 and score["numbers"] >= 0.95 and score["direction"] >= 0.95


CUT = ("(EngineCore_DP0 pid=5) INFO 11-24 06:55:14 [gpu_model_runner.py:2392] Model loading took 14.99 GiB\n"
       "(EngineCore_DP0 pid=5) INFO 11-24 06:55:30 [gpu_worker.py:298] Available KV cache memory: 2.92 GiB\n"
       "(EngineCore_DP0 pid=5) INFO 11-24 06:55:31 [gpu_model_runner.py:3480] Capturing CUDA graphs (mixed "
       "prefill-decode, PIECEWISE):  40%|####      | 27/67\n")
# the scenario's server runs max_model_len 8192: 300 blocks of 16 tokens hold 4800
BLOCKS = ("INFO 04-27 10:13:04 llm_engine.py:70] Initializing an LLM engine with config: model='m', max_seq_len=8192, "
          "seed=0\n"
          "INFO 04-27 10:13:05 llm_engine.py:275] # GPU blocks: 300, # CPU blocks: 256\n")


# one refused prompt, where the scenario's server runs max_model_len 8192 and may go to 32768:
# sustained, a longer max_model_len would be tried
REFUSED = ("ERROR 04-27 10:13:04 serving_chat.py:200] Error in preprocessing prompt inputs: This model's maximum "
           "context length is 8192 tokens. However, you requested 9100 tokens (9000 in the messages, 100 in the "
           "completion). Please reduce the length of the messages or completion.\n")


@pytest.mark.parametrize("log, action, confidence, scenario", [
    (CUT, "alert", "truncated", "workstation-12gb-speech"), (BLOCKS, "tune", "inferred", "workstation-12gb-speech"),
    (REFUSED, "alert", "unsustained", "h100-qwen7b-refused-long")])
def test_the_loops_policy_for_each_confidence(tmp_path, log, action, confidence, scenario):
    # a log cut short, or a runtime symptom seen once, is told, never tuned; a failure inferred
    # from vLLM's accounting is tuned like a stated one (its canary proves it before anything is
    # promoted)
    config = tmp_path / "selfheal.toml"
    config.write_text(f'[deployments.chat]\nscenario = "{scenario}"\n')
    path = tmp_path / "vllm.log"
    path.write_text(log)
    db = tmp_path / "ops.db"
    selfheal.observe([path], deployment="chat", db=db, config=config)
    selfheal.run(db=db, config=config)
    (raised,) = [selfheal.typed(r) for r in selfheal.events(db=db, types=["IntentRaised"])]
    (observed,) = [selfheal.typed(r) for r in selfheal.events(db=db, types=["ObservationMade"])]
    assert observed.event.finding.confidence == confidence
    assert raised.event.action == action, raised.event.reason


@pytest.mark.parametrize("name", ["cut", "refused"])
def test_the_readmes_lower_confidence_examples_are_real_output(tmp_path, name):
    section = (ROOT / "README.md").read_text().split("### Logs as people paste them", 1)[1]
    block = re.search(rf"```\n\$ cat {name}\.log\n(.*?)\$ selfheal diagnose {name}\.log\n(.*?)```", section, re.S)
    assert block, f"README lost its {name}.log example"
    (tmp_path / f"{name}.log").write_text(block.group(1))
    done = subprocess.run([sys.executable, "-m", "selfheal", "diagnose", f"{name}.log"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done.stderr  # a failure found (cli/exits.py)
    assert done.stdout == block.group(2)
