"""Shared material for the hostile-input tests: real vLLM error lines, hostile inputs, and a
way to run `selfheal` as a real process with its time, peak memory and a memory ceiling."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
ENV.pop("SELFHEAL_DEBUG", None)  # the one-line promise is what is tested
ENV.pop("SELFHEAL_CONFIG", None)

TRY = "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."

#: one real message per failure kind, as vLLM / PyTorch print them (/work/shared/vllm/error_formats.md)
REAL = [
    "ValueError: Free memory on device (9.8/11.6 GiB) on startup is less than desired GPU memory utilization "
    "(0.9, 10.44 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
    "ValueError: Free memory on device cuda:0 (36.0/79.19 GiB) on startup is less than desired GPU memory "
    "utilization (0.92, 72.86 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
    "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
    "initializing the engine.",
    "INFO 11-24 06:55:12 [gpu_worker.py:276] Available KV cache memory: -2.14 GiB",
    "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is "
    "needed, which is larger than the available KV cache memory (5.37 GiB). Based on the available memory, the "
    f"estimated maximum model length is 43984. {TRY}",
    "ValueError: To serve at least one request with the model's max seq len (32768), (4.0 GiB KV cache is "
    "needed, which is larger than the available KV cache memory (2.5 GiB). Based on the available memory, the "
    "estimated maximum model length is 20480. Try increasing `gpu_memory_utilization` (which also controls CPU "
    "memory on the CPU backend) or decreasing `max_model_len` when initializing the engine.",
    "ValueError: The model's max seq len (8192) is larger than the maximum number of tokens that can be stored "
    f"in KV cache (6144). {TRY}",
    "ValueError: max_num_batched_tokens (4096) is smaller than max_model_len (5000). This effectively limits the "
    "maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. Please increase "
    "max_num_batched_tokens or decrease max_model_len.",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "11.76 GiB of which 605.88 MiB is free. Process 2211 has 3.50 GiB memory in use. Of the allocated memory "
    "7.21 GiB is allocated by PyTorch, and 201.55 MiB is reserved by PyTorch but unallocated.",
    "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.75 GiB total "
    "capacity; 11.52 GiB already allocated; 448.00 KiB free; 13.71 GiB reserved in total by PyTorch)",
    "RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests. Please try "
    "lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
    "ValueError: max_num_seqs (256) exceeds available Mamba cache blocks (97). Each decode sequence requires one "
    "Mamba cache block, so CUDA graph capture cannot proceed. Please lower max_num_seqs to at most 97 or "
    "increase gpu_memory_utilization.",
    "ValueError: User-specified max_model_len (16384) is greater than the derived max_model_len "
    "(max_position_embeddings=8192 or model_max_length=None in model's config.json). To allow overriding this "
    "maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1",
    "ValueError: max_num_batched_tokens (8) must be greater than or equal to max_num_seqs (256).",
    "INFO 11-24 06:55:12 [model_runner.py:1] Capturing cudagraphs for decoding. This may lead to unexpected "
    "consequences if the model is not static. To run the model in eager mode, set 'enforce_eager=True' or use "
    "'--enforce-eager' in the CLI.",
]
STARTUP = REAL[0]


def with_numbers(message: str, replacement: str) -> str:
    """A real message with every number in it replaced by `replacement` (e.g. '1e308', 'NaN')."""
    import re

    return re.sub(r"\d+(?:\.\d+)?", replacement, message)


#: hostile inputs, as the bytes a log file would hold
HOSTILE: dict[str, bytes] = {
    "invalid-utf8": b"INFO \xff\xfe\xc3\x28 \xed\xa0\x80 bad bytes\n" + STARTUP.encode() + b"\xff\n\xc0\xaf\n",
    "ansi-escapes": ("\x1b[31mERROR\x1b[0m \x1b]0;title\x07" + STARTUP.replace("9.8", "\x1b[1m9.8\x1b[0m")
                     + "\x1b[2J\x1b[H\n").encode(),
    "nul-bytes": b"\x00\x00INFO\x00 started\n" + STARTUP.encode().replace(b"GiB)", b"GiB)\x00") + b"\n\x00" * 100,
    "10MB-line": b"x" * (10 * 1024 * 1024) + b" " + STARTUP.encode() + b"\n",
    "1e308": "\n".join(with_numbers(m, "1e308") for m in REAL).encode(),
    "-5 GiB": "\n".join(with_numbers(m, "-5") for m in REAL).encode(),
    "NaN": "\n".join(with_numbers(m, "NaN") for m in REAL).encode(),
    "inf": "\n".join(with_numbers(m, "inf") for m in REAL).encode(),
    "huge digits": "\n".join(with_numbers(m, "9" * 5000) for m in REAL).encode(),
}


@dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float
    max_rss_mib: float

    @property
    def err_lines(self) -> list[str]:
        return [x for x in self.err.splitlines() if x.strip()]


def _ceiling(limit_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return apply


def selfheal(folder: Path, *args: str, stdin: bytes | None = None, timeout: float = 60,
             memory_limit: int = 2 << 30) -> Result:
    """Run `python -m selfheal ARGS` as a real process under an address-space ceiling (so a
    runaway allocation fails there instead of straining the machine); its time and peak RSS.
    `folder` (a test's tmp_path) receives the captured output."""
    out_path, err_path = folder / ".selfheal-test-out", folder / ".selfheal-test-err"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "selfheal", *args], cwd=ROOT, env=ENV,
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=out, stderr=err, preexec_fn=_ceiling(memory_limit))
        if stdin is not None:
            threading.Thread(target=lambda: (proc.stdin.write(stdin), proc.stdin.close()), daemon=True).start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    result = Result(proc.returncode, out_path.read_text("utf-8", "replace"), err_path.read_text("utf-8", "replace"),
                    seconds, usage.ru_maxrss / 1024)
    out_path.unlink()
    err_path.unlink()
    return result


def assert_one_line_error(result: Result) -> None:
    """The CLI's promise for a failure: exit 1, one line on stderr, no traceback."""
    assert result.rc == 1, (result.rc, result.err[-2000:])
    assert len(result.err_lines) == 1, result.err[-2000:]
    assert result.err_lines[0].startswith("selfheal: "), result.err_lines
    assert "Traceback" not in result.err
