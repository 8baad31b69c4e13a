"""A log that ends inside CUDA-graph capture (or a dummy batch) is read as cut short there, a
finding of lower confidence (`cut_in` rules), only while its last lines state no other cause.
Capture also fails for reasons that are not memory (public vLLM threads show an illegal memory
access during capture on GH200 and GB200, a stream-capture error after a nightly upgrade, an
all-reduce assertion): those logs must stay silent, while a capture cut with nothing after it,
or with only a wrapper that points at the root cause, still speaks (handlers/observer/endings.py)."""
from __future__ import annotations

import pytest

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer.endings import another_cause

P = "(EngineCore_DP0 pid=230522) "
START = [
    P + "INFO 12-04 10:12:01 [gpu_model_runner.py:2653] Model loading took 14.99 GiB memory and 5.1 seconds",
    P + "INFO 12-04 10:12:09 [gpu_worker.py:298] Available KV cache memory: 52.1 GiB",
    P + "INFO 12-04 10:12:09 [kv_cache_utils.py:1087] GPU KV cache size: 426,800 tokens",
]
CAPTURE = P + "INFO 12-04 10:12:10 [gpu_model_runner.py:3500] Capturing CUDA graph shapes:  12%"
FRAMES = [
    P + "ERROR 12-04 10:12:12 [core.py:708] EngineCore failed to start.",
    P + "ERROR 12-04 10:12:12 [core.py:708] Traceback (most recent call last):",
    P + 'ERROR 12-04 10:12:12 [core.py:708]   File "/opt/venv/lib/python3.12/site-packages/vllm/v1/worker/'
        'gpu_model_runner.py", line 4530, in _capture_cudagraphs',
    P + "ERROR 12-04 10:12:12 [core.py:708]     self._dummy_run(",
]
CUDA_ADVICE = [
    P + "ERROR 12-04 10:12:12 [core.py:708] CUDA kernel errors might be asynchronously reported at some other "
        "API call, so the stacktrace below might be incorrect.",
    P + "ERROR 12-04 10:12:12 [core.py:708] For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
]
WRAPPER = [
    "(APIServer pid=230300) Traceback (most recent call last):",
    "(APIServer pid=230300) RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {'EngineCore_DP0': 1}",
]
OTHER_CAUSES = {
    "illegal memory access": P + "ERROR 12-04 10:12:12 [core.py:708] torch.AcceleratorError: CUDA error: an illegal "
                                 "memory access was encountered",
    "stream capture": P + "ERROR 12-04 10:12:12 [core.py:708] RuntimeError: CUDA error: operation not permitted "
                          "when stream is capturing",
    "NCCL": P + "ERROR 12-04 10:12:12 [core.py:708] torch.distributed.DistBackendError: NCCL error in: "
                "../torch/csrc/distributed/c10d/NCCLUtils.hpp:317, unhandled cuda error",
    "bare assertion": P + "ERROR 12-04 10:12:12 [core.py:708] AssertionError",
    "interrupt": "KeyboardInterrupt",
    # V1's executor quoting its worker's error, with its pointer to the root cause
    "a worker's error quoted": P + "ERROR 12-04 10:12:12 [core.py:708] RuntimeError: Worker failed with error "
                                   "'index out of range in self', please check the stack trace above for the root cause",
}


def _log(*parts: list[str]) -> str:
    return "\n".join(line for part in parts for line in part) + "\n"


@pytest.mark.parametrize("cause", sorted(OTHER_CAUSES))
def test_a_capture_that_died_of_another_cause_is_not_read_as_cut_short(cause):
    text = _log(START, [CAPTURE], FRAMES, [OTHER_CAUSES[cause]], CUDA_ADVICE, WRAPPER)
    assert diagnose(text).findings == []


def test_an_error_that_names_the_capture_call_opens_the_phase_and_states_its_cause():
    # torch_npu's graph capture where CANN lacks the call: the error's own words open ACL graph
    # capture (torch_npu.ctx.acl_graph_capture), and it is the error that ended the log
    ended = ["(VllmWorker rank=0 pid=38) ERROR 06-17 14:07:56 [multiproc_executor.py:523]     "
             "super().capture_begin(pool=pool, capture_error_mode=capture_error_mode)",
             "(VllmWorker rank=0 pid=38) ERROR 06-17 14:07:56 [multiproc_executor.py:523] RuntimeError: Failed to "
             "find function aclmdlRICaptureBegin",
             "[ERROR] 2025-06-17-14:07:56 (PID:38, Device:0, RankID:-1) ERR00008 PTA resource not found"]
    assert diagnose(_log(START, ended)).findings == []
    # the same call named by an error of memory, with nothing after it, is still read
    oom = ["(VllmWorker rank=0 pid=38) ERROR 06-17 14:07:56 [multiproc_executor.py:523] RuntimeError: NPU out of "
           "memory in aclmdlRICaptureBegin"]
    assert diagnose(_log(START, oom)).primary.kind == "cuda_graph_oom"


@pytest.mark.parametrize("ending", [[], FRAMES, FRAMES + WRAPPER], ids=["opener", "frames", "wrapper"])
def test_a_capture_cut_with_nothing_or_only_a_wrapper_after_it_still_speaks(ending):
    f = diagnose(_log(START, [CAPTURE], ending)).primary
    assert (f.kind, f.confidence, f.action) == ("cuda_graph_oom", "truncated", "alert")


def test_a_capture_line_quoted_alone_is_no_cut_even_when_a_wrapper_repeats_it():
    # a tool that re-logs vLLM's output under its own logger, and logs again as an error every line
    # that holds the word "error": the one line, said twice, is still a quote, not a start that stopped
    said = CAPTURE.split(") ", 1)[1]
    mirrored = [f"2026-01-05 08:00:01,200 - INFO - {said}",
                f"2026-01-05 08:00:01,201 - ERROR - Found error in output: {said}",
                "2026-01-05 08:00:01,250 - INFO - "]
    assert diagnose(_log(mirrored)).findings == []
    assert diagnose(_log(mirrored[:1])).findings == []
    # the same lines after the start's own lines are a log cut in capture
    f = diagnose(_log(START, mirrored)).primary
    assert (f.kind, f.confidence) == ("cuda_graph_oom", "truncated")


def test_a_capture_notice_quoted_in_prose_is_no_cut():
    # a commit message or a post that quotes V0's capture notice, its header dropped, after a
    # sentence of its own: no record of a program is in it, so no log stopped in capture
    notice = ("Capturing cudagraphs for decoding. This may lead to unexpected consequences if the model is not "
              "static. To run the model in eager mode, set 'enforce_eager=True' or use '--enforce-eager' in the CLI.")
    assert diagnose(f"Because of this warning, I disabled CUDA graphs:\n\n{notice}\n").findings == []
    # with the header it was logged with, it is a record: a log cut in capture
    f = diagnose(f"We see this and then nothing:\n\nINFO 12-08 09:22:16 model_runner.py:1402] {notice}\n").primary
    assert (f.kind, f.confidence) == ("cuda_graph_oom", "truncated")
    # and so is the progress bar V1 draws, which has no header
    f = diagnose("It hangs here, then the pod restarts:\n"
                 "Capturing CUDA graphs (decode, FULL):   9%|9         | 3/35 [00:00<00:09,  3.30it/s]\n").primary
    assert (f.kind, f.confidence) == ("cuda_graph_oom", "truncated")


def test_a_wrapper_is_judged_by_the_error_it_quotes():
    wrapper = "RuntimeError: Worker failed with error '{}', please check the stack trace above for the root cause"
    assert another_cause(wrapper.format("cu_seqlens_q must be on CUDA")) is not None
    assert another_cause(wrapper.format("CUDA out of memory. Tried to allocate 2.00 GiB")) is None
    assert another_cause(wrapper.format("")) is None  # nothing quoted: a pointer alone


def test_an_error_before_the_capture_opened_does_not_explain_the_cut():
    # a start that failed of something else, then a restart whose capture the log cuts
    text = _log(START, FRAMES, [OTHER_CAUSES["NCCL"]], START, [CAPTURE])
    f = diagnose(text).primary
    assert (f.kind, f.confidence) == ("cuda_graph_oom", "truncated")


def test_memory_stated_in_the_last_lines_is_never_another_cause():
    for line in ["RuntimeError: CUDA error: out of memory", "torch.OutOfMemoryError: CUDA out of memory.",
                 "ValueError: not enough memory to capture", "RuntimeError: NCCL error: see the logs above"]:
        assert another_cause(line) is None, line
    for line in ['    except ValueError:', '    raise RuntimeError(', '  File "x.py", line 3, in capture_model']:
        assert another_cause(line) is None, line


def test_the_cause_is_read_from_a_file_too(tmp_path):
    path = tmp_path / "vllm.log"
    path.write_text(_log(START, [CAPTURE], FRAMES, [OTHER_CAUSES["NCCL"]], WRAPPER), encoding="utf-8")
    assert diagnose(path).findings == []


DUMMY_BATCH = [
    P + "ERROR 11-19 12:16:36 [core.py:842] Traceback (most recent call last):",
    P + 'ERROR 11-19 12:16:36 [core.py:842]   File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/'
        'gpu_model_runner.py", line 3400, in profile_run',
    P + "ERROR 11-19 12:16:36 [core.py:842]     output = self._dummy_sampler_run(last_hidden_states)",
    P + 'ERROR 11-19 12:16:36 [core.py:842]   File "/usr/local/lib/python3.12/dist-packages/vllm/v1/worker/'
        'gpu_model_runner.py", line 3300, in _dummy_sampler_run',
    P + "ERROR 11-19 12:16:36 [core.py:842]     raise e",
]


def test_a_dummy_batch_that_died_of_another_cause_is_not_read_as_cut_short():
    # a GPU newer than the build's kernels fails in the profile run too, with no memory involved
    cut = diagnose(_log(START, DUMMY_BATCH)).primary
    assert (cut.rule, cut.confidence) == ("vllm.cut.dummy_batch", "truncated")
    stated = P + ("ERROR 11-19 12:16:36 [core.py:842] torch.AcceleratorError: CUDA error: no kernel image is "
                  "available for execution on the device")
    assert diagnose(_log(START, DUMMY_BATCH, [stated])).findings == []


def test_another_cause_in_colour_is_still_another_cause():
    # a terminal's capture keeps the colours: a reset after "KeyboardInterrupt" hid it from the end
    coloured = "\x1b[0;36m" + P + "ERROR 11-19 12:16:36 [core.py:842] KeyboardInterrupt\x1b[0;0m"
    assert diagnose(_log(START, DUMMY_BATCH, [coloured])).findings == []


def test_another_cause_lowered_with_the_whole_paste_is_still_another_cause():
    # a paste retyped or lowered whole ("keyerror: ..."): the exception's name is still one, and a
    # lowered warning still stops nothing
    cut = _log(START, DUMMY_BATCH).lower()
    assert diagnose(cut).primary.confidence == "truncated"
    stated = P + "ERROR 11-19 12:16:36 [core.py:842] KeyError: 'Cannot find `mm_limits` for model=/m'"
    assert diagnose(_log(START, DUMMY_BATCH, [stated]).lower()).findings == []
    warned = P + "WARNING 12-04 10:12:11 [warnings.py:110] UserWarning: TypedStorage is deprecated."
    assert diagnose(_log(START, DUMMY_BATCH, [warned]).lower()).primary.confidence == "truncated"


def test_a_warning_after_the_capture_opened_is_no_cause():
    # a library's warning stops nothing: the log is still cut short where capture ran
    warned = P + "WARNING 12-04 10:12:11 [warnings.py:110] UserWarning: TypedStorage is deprecated."
    f = diagnose(_log(START, [CAPTURE], [warned])).primary
    assert (f.kind, f.confidence) == ("cuda_graph_oom", "truncated")


def test_a_capture_that_hangs_is_not_read_as_cut_short():
    # the engine is alive after capture opened, waiting on a worker (a ROCm hang at 71% of capture,
    # vLLM 0.19): the notice repeats and no process died there
    hang = ("(EngineCore_DP0 pid=230522) WARNING 12-04 10:13:10 [shm_broadcast.py:681] No available shared memory "
            "broadcast block found in 60 seconds. This typically happens when some processes are hanging or doing "
            "some time-consuming work (e.g. compilation, weight/kv cache quantization).")
    assert diagnose(_log(START, [CAPTURE], [hang, hang])).findings == []
    assert another_cause(_log([CAPTURE, hang]), since="Capturing CUDA graph shapes") == hang
    # a notice before the capture opened says nothing of the cut
    assert diagnose(_log(START, [hang, CAPTURE])).primary.confidence == "truncated"


OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 has a total capacity of "
       "23.69 GiB of which 1.10 GiB is free.")
TRAINER = ["Traceback (most recent call last):",
           '  File "/home/u/rl/trainer/actor.py", line 139, in compute_log_prob',
           "    probs = torch.softmax(logits, dim=-1)",
           '  File "/opt/conda/lib/python3.11/site-packages/torch/nn/functional.py", line 1888, in softmax',
           "    ret = input.softmax(dim)"]


def test_pytorchs_oom_in_another_programs_traceback_is_not_vllms():
    # a trainer's step and a notebook's quantizing loader (IPython's frames) print PyTorch's OOM
    # as vLLM would: with no trace of vLLM around it, it is theirs
    assert diagnose(_log(TRAINER, [OOM])).findings == []
    notebook = ["File ~/envs/ft/lib/python3.11/site-packages/bitsandbytes/functional.py:1212, in quantize_4bit(A)",
                "-> 1212     out = torch.zeros(n, dtype=dtype, device=A.device)",
                "RuntimeError: CUDA driver error: out of memory"]
    assert diagnose(_log(notebook)).findings == []
    # Gaudi's PyTorch bridge prints its device OOM in any program that runs on Gaudi, as PyTorch does
    gaudi = "RuntimeError: [Rank:0] FATAL ERROR :: MODULE:PT_DEVMEM Allocation failed for size::268435456 (256)MB"
    assert diagnose(_log(TRAINER, [gaudi])).findings == []
    assert diagnose(gaudi).primary.rule == "habana.pt_allocation_failed"


@pytest.mark.parametrize("around", [
    ["Error executing job with overrides: ['trainer.n_gpus_per_node=8', 'actor_rollout_ref.rollout.name=vllm']"],
    ["config: {'rollout': {'name': 'vllm', 'tensor_model_parallel_size': 2}}"],
    ["(WorkerDict pid=165457) Loading checkpoint shards: 100%|##########| 2/2 [00:08<00:00,  3.91s/it]"],
], ids=["a setting's value", "a printed config's value", "another program's Ray actor"])
def test_a_run_that_chose_vllm_for_another_part_is_no_trace_of_vllm(around):
    # an RL trainer names vLLM as its rollout engine in its overrides, and its Ray actors print
    # "(Name pid=N)" as vLLM's workers do: its own log-prob pass out of memory is still its own
    assert diagnose(_log(around, TRAINER, [OOM])).findings == []


@pytest.mark.parametrize("around", [
    ['  File "/usr/lib/python3.12/site-packages/vllm/v1/worker/gpu_worker.py", line 300, in determine_available_memory'],
    ["(EngineCore_DP0 pid=7) ERROR 12-04 10:12:10 [core.py:700] EngineCore failed to start."],
    ["(RayWorkerWrapper pid=7) INFO 12-04 10:12:09 [gpu_worker.py:298] Available KV cache memory: 2.92 GiB"],
    ["We start the server with vllm serve and get:"],
], ids=["a vLLM frame", "a vLLM record", "a vLLM record under Ray", "the word"])
def test_pytorchs_oom_with_a_trace_of_vllm_is_read(around):
    f = diagnose(_log(around, TRAINER, [OOM])).primary
    assert (f.kind, f.rule) == ("cuda_oom_allocation", "torch.cuda_oom")


def test_pytorchs_oom_under_pytorchs_own_frames_alone_is_read():
    # PyTorch's frames, or none, say nothing of which program ran
    assert diagnose(_log(TRAINER[:1] + TRAINER[3:], [OOM])).primary.kind == "cuda_oom_allocation"
    assert diagnose(OOM).primary.kind == "cuda_oom_allocation"
