"""Mechanisms the wild corpus (tests/observer/samples/wild, bench/wild.py) showed missing, each
with the look-alikes that must not take it: a PyTorch OOM inside vLLM's memory profiling run; a
traceback cut inside the run of a dummy batch; a log that states XLA's memory-space error in
capture was not cut there; the line of vLLM's CUDA-graph wrappers that runs the model inside the capture; Ray's
summary of its workers' repeated lines, printed after the error it preceded; a startup check with
so little free that no utilization fits."""
from __future__ import annotations

from selfheal.handlers.observer import diagnose
from selfheal.schemas.serving import ServingConfig

TORCH_OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 19.63 GiB. GPU 3 has a total capacity of "
             "79.15 GiB of which 17.73 GiB is free.")
PROFILE = "INFO 09-27 05:20:20 enc_dec_model_runner.py:301] Starting profile run for multi-modal models."
W = "(VllmWorkerProcess pid=214) ERROR 09-27 05:20:38 multiproc_worker_utils.py:233] "
PROFILE_FRAMES = [W + "Traceback (most recent call last):",
                  W + '  File "/usr/lib/python3.12/dist-packages/vllm/worker/worker.py", line 223, in determine_num_available_blocks',
                  W + "    self.model_runner.profile_run()",
                  W + '  File "/usr/lib/python3.12/dist-packages/vllm/worker/enc_dec_model_runner.py", line 348, in profile_run',
                  W + "    self.execute_model(model_input, kv_caches, intermediate_tensors)"]


# -- an OOM inside the memory profiling run ---------------------------------------------------

def test_an_oom_in_the_profile_run_lowers_max_num_seqs():
    f = diagnose("\n".join(PROFILE_FRAMES + [W + TORCH_OOM]), current=ServingConfig(max_num_seqs=256)).primary
    assert (f.rule, f.kind) == ("torch.cuda_oom", "cuda_oom_allocation")
    assert f.fix_direction == {"max_num_seqs": "decrease", "gpu_memory_utilization": "decrease"}
    assert f.fix == {"max_num_seqs": 128} and "memory profiling run" in f.note


def test_v0s_profile_run_message_opens_the_phase():
    f = diagnose("\n".join([PROFILE, TORCH_OOM])).primary
    assert f.fix_direction.get("max_num_seqs") == "decrease" and f.action == "alert"  # no current config


def test_the_accounting_that_ends_the_profile_run_closes_it():
    blocks = "INFO 09-27 05:20:40 distributed_gpu_executor.py:57] # GPU blocks: 2000, # CPU blocks: 2048"
    f = diagnose("\n".join([PROFILE, blocks, TORCH_OOM])).primary
    assert f.fix_direction == {"gpu_memory_utilization": "decrease"}


def test_a_frame_of_another_function_is_no_profile_run():
    frame = W + '  File "/srv/app/bench.py", line 9, in profile_runner'
    f = diagnose("\n".join([frame, W + TORCH_OOM])).primary
    assert "max_num_seqs" not in f.fix_direction


def test_a_capture_inside_the_profile_run_is_read_as_capture():
    # V1 0.14+ profiles CUDA-graph memory by capturing graphs: the capture refine comes first
    frame = W + '  File "/x/vllm/v1/worker/gpu_model_runner.py", line 4000, in profile_cudagraph_memory'
    f = diagnose("\n".join(PROFILE_FRAMES + [frame, W + TORCH_OOM])).primary
    assert f.kind == "cuda_graph_oom"


# -- a log that states XLA's memory-space error in capture was not cut ----------------------

CAPTURE_V1 = ["(EngineCore_DP0 pid=563) INFO 12-23 23:34:23 [gpu_worker.py:298] Available KV cache memory: 20.1 GiB",
              "(EngineCore_DP0 pid=563) INFO 12-23 23:34:24 [gpu_model_runner.py:2100] Capturing CUDA graph shapes:  40%"]
E = "(EngineCore_DP0 pid=563) ERROR 12-23 23:34:30 [core.py:515] "


def test_xlas_memory_space_error_in_capture_says_the_log_was_not_cut():
    for error in ("ValueError: Ran out of memory in memory space vmem while allocating on stack",
                  "valueerror: ran out of memory in memory space smem while allocating"):
        assert diagnose("\n".join(CAPTURE_V1 + [E + error])).findings == [], error


def test_a_log_that_ends_in_capture_without_its_error_is_still_cut_there():
    f = diagnose("\n".join(CAPTURE_V1 + [E + "EngineCore failed to start."])).primary
    assert (f.kind, f.confidence) == ("cuda_graph_oom", "truncated")


def test_vllms_report_that_the_engine_died_is_no_stated_error():
    died = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
    f = diagnose("\n".join(CAPTURE_V1 + [died])).primary
    assert (f.rule, f.confidence) == ("vllm.cut.cudagraph_capture", "truncated")


def test_an_oom_stated_in_capture_keeps_the_capture_reading():
    for oom in ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity "
                "of 23.54 GiB of which 3.12 MiB is free.", "RuntimeError: CUDA error: out of memory"):
        f = diagnose("\n".join(CAPTURE_V1 + [E + oom])).primary
        assert (f.kind, f.confidence) == ("cuda_graph_oom", "stated"), oom


# -- a traceback cut inside the run of a dummy batch ------------------------------------------

def test_a_traceback_cut_in_the_profile_run_is_a_truncated_oom():
    d = diagnose("\n".join([PROFILE] + PROFILE_FRAMES), current=ServingConfig(max_num_seqs=256))
    f = d.primary
    assert (f.rule, f.kind, f.confidence, f.action, f.fix) == ("vllm.cut.dummy_batch", "cuda_oom_allocation",
                                                              "truncated", "alert", {})
    assert "max_num_seqs=128" in f.note and f.fix_direction.get("max_num_seqs") == "decrease"


def test_a_traceback_cut_in_the_poolers_warm_up_task_is_one_too():
    frame = W + '  File "/x/vllm/v1/worker/gpu/pool/pooling_runner.py", line 80, in _dummy_pooler_run_task'
    assert diagnose("\n".join([W + "Traceback (most recent call last):", frame])).primary.rule == "vllm.cut.dummy_batch"


def test_a_traceback_begun_in_the_profile_run_and_cut_before_its_frames_is_one_too():
    # a stored copy of a thread that stops at the traceback's first lines (round 36, 4005): the
    # profile run had begun and nothing since states a cause
    runpy = W + '  File "/usr/lib/python3.10/runpy.py", line 196, in _run_module_as_main'
    f = diagnose("\n".join([PROFILE, W + "Traceback (most recent call last):", runpy])).primary
    assert (f.rule, f.kind, f.confidence) == ("vllm.cut.dummy_batch", "cuda_oom_allocation", "truncated")
    # a program's own words "with error:" are no compiler's or linker's diagnostic
    said = "INFO 09-27 05:20:39 client.py:8] request failed with error: timed out"
    f = diagnose("\n".join([PROFILE, W + "Traceback (most recent call last):", runpy, said])).primary
    assert (f.rule, f.confidence) == ("vllm.cut.dummy_batch", "truncated")


def test_a_traceback_outside_the_profile_run_tells_no_phase():
    loaded = "INFO 09-27 05:20:01 model_runner.py:1067] Loading model weights took 19.9 GB"
    blocks = "INFO 09-27 05:20:30 gpu_executor.py:122] # GPU blocks: 2000, # CPU blocks: 512"
    tb = [W + "Traceback (most recent call last):", W + '  File "/usr/lib/python3.10/runpy.py", line 196, in x']
    assert diagnose("\n".join(["INFO 09-27 05:19:00 api_server.py:1] vLLM API server version 0.6.2"] + tb)).findings == []
    assert diagnose("\n".join([loaded, PROFILE, blocks] + tb)).findings == []  # the run had ended


def test_a_cause_stated_in_the_profile_run_before_the_traceback_explains_the_cut():
    # a JIT build that failed to link, then the engine's traceback, cut (corpus look-alike 2797):
    # the cause is read from the run's start, not only from the traceback's first line
    for cause in ("collect2: error: ld returned 1 exit status", "/tmp/x/main.c:4:10: fatal error: Python.h: No such file"):
        lines = [PROFILE, cause, W + "EngineCore failed to start.", W + "Traceback (most recent call last):",
                 W + '  File "/usr/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 491, in run_engine_core']
        assert diagnose("\n".join(lines)).findings == [], cause


def test_vllms_report_that_the_engine_died_in_the_profile_run_says_it_too():
    died = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
    f = diagnose("\n".join(PROFILE_FRAMES + [died])).primary
    assert (f.rule, f.confidence) == ("vllm.cut.dummy_batch", "truncated")


def test_a_log_that_stops_at_the_profile_run_message_is_no_crash():
    # a start that hangs, or a paste that stops, at "Starting profile run": no traceback, nothing said
    assert diagnose("\n".join(["INFO 09-27 05:20:01 model_runner.py:1067] Loading model weights took 19.9 GB", PROFILE])
                    ).findings == []


def test_an_oom_stated_after_the_frames_is_read_as_stated():
    f = diagnose("\n".join(PROFILE_FRAMES + [W + TORCH_OOM])).primary
    assert (f.rule, f.confidence) == ("torch.cuda_oom", "stated")


# -- the line that runs the model inside torch.cuda.graph --------------------------------------

def test_an_oom_under_the_capture_body_line_is_a_capture_oom():
    frame = W + '  File "/x/vllm/compilation/cuda_graph.py", line 316, in __call__'
    body = W + "    output = self.runnable(*args, **kwargs)"
    f = diagnose("\n".join([frame, body, W + TORCH_OOM])).primary
    assert f.kind == "cuda_graph_oom"


def test_an_oom_under_the_piecewise_backends_concrete_size_entry_is_a_capture_oom():
    # 0.8-0.11: the entry of a size to capture, run by capture_model's warm-ups before capture
    frame = W + '  File "/x/vllm/compilation/cuda_piecewise_backend.py", line 156, in __call__'
    body = W + "    return entry.runnable(*args)"
    assert diagnose("\n".join([frame, body, W + TORCH_OOM])).primary.kind == "cuda_graph_oom"


def test_the_range_entry_of_later_versions_runs_every_batch():
    # 0.14+: every forward pass goes through range_entry.runnable: no phase of its own
    frame = W + '  File "/x/vllm/compilation/piecewise_backend.py", line 379, in __call__'
    body = W + "    return range_entry.runnable(*args)"
    assert diagnose("\n".join([frame, body, W + TORCH_OOM])).primary.kind == "cuda_oom_allocation"


def test_the_wrappers_replay_or_skip_lines_are_no_capture():
    frame = W + '  File "/x/vllm/compilation/cuda_graph.py", line 239, in __call__'
    skip = W + "    return self.runnable(*args, **kwargs)"
    assert diagnose("\n".join([frame, skip, W + TORCH_OOM])).primary.kind == "cuda_oom_allocation"


# -- Ray's summary of repeated lines comes after what it summarises ---------------------------

RAY = "(RayWorkerVllm pid=74362) INFO 12-18 21:44:36 model_runner.py:394] "
CAPTURE_RAY = RAY + ("Capturing the model for CUDA graphs. This may lead to unexpected consequences if the model is not "
                     "static. [repeated 7x across cluster] (Ray deduplicates logs by default. Set RAY_DEDUP_LOGS=0 to "
                     "disable log deduplication)")
DRIVER_OOM = "RuntimeError: CUDA error: out of memory"


def test_an_error_before_rays_summary_of_the_capture_is_a_capture_oom():
    d = diagnose("\n".join(["Qwen-72B on 8 x 4090 fails:", DRIVER_OOM, CAPTURE_RAY]), current=ServingConfig())
    f = d.primary
    assert (f.kind, f.rule, f.fix) == ("cuda_graph_oom", "torch.cuda_driver_oom", {"enforce_eager": True})
    assert "Ray's summary at line 3" in f.note and f.line == 2
    assert [x.kind for x in d.findings] == ["cuda_oom_allocation", "cuda_graph_oom"]


def test_a_capture_line_printed_after_the_error_as_itself_changes_nothing():
    # lines after a failure never change it: only Ray's summary is printed later than its records
    plain = RAY + "Capturing the model for CUDA graphs."
    assert [f.kind for f in diagnose("\n".join([DRIVER_OOM, plain])).findings] == ["cuda_oom_allocation"]


def test_rays_summary_after_a_restart_is_another_start():
    restart = "INFO 12-18 21:44:00 llm_engine.py:73] Initializing an LLM engine with config: model='m', max_seq_len=4096"
    assert [f.kind for f in diagnose("\n".join([DRIVER_OOM, restart, CAPTURE_RAY])).findings] == ["cuda_oom_allocation"]


def test_an_error_already_read_in_a_phase_is_not_read_again():
    load = "INFO 12-18 21:40:00 model_runner.py:50] Starting to load model /m"
    d = diagnose("\n".join([load, DRIVER_OOM, CAPTURE_RAY]))
    # read while the weights loaded, it stays so
    assert [f.kind for f in d.findings] == ["cuda_oom_allocation"] and "Ray's summary" not in d.primary.note
    assert "loading the model weights" in d.primary.note


# -- a fit of 0 or less ---------------------------------------------------------------------------

STARTUP = ("ValueError: Free memory on device cuda:0 ({free}/23.56 GiB) on startup is less than desired GPU memory "
           "utilization (0.9, 21.2 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")


def test_so_little_free_memory_that_no_utilization_fits_is_told_not_tuned():
    # 0.34 GiB of 23.56 free (another server still holds the card): the fit, 0.013, is 0 on the
    # grid, which vLLM refuses; the direction stays the error's, and nothing is tuned
    f = diagnose(STARTUP.format(free=0.34)).primary
    assert f.kind == "startup_free_memory_below_utilization" and f.numbers["free_gib"] == 0.34
    assert (f.action, f.fix, f.fix_direction) == ("alert", {}, {"gpu_memory_utilization": "decrease"})
    assert f.note == ("fix not computable: gpu_memory_utilization would be 0, and vLLM takes only values above 0 "
                      "(0.34 of 23.56 GiB free; utilization keeps 10% of it unused)")
    # with room for a utilization on the grid, it is tuned as before
    f = diagnose(STARTUP.format(free=6.44)).primary
    assert (f.action, f.fix) == ("tune", {"gpu_memory_utilization": 0.2})
