"""What the end of a log states: an exception that names a cause other than memory.

A log that ends inside a phase where a failure was not seen (CUDA-graph capture, a dummy batch:
`cut_in` rules) is read as cut short there, a finding of lower confidence. That reading holds
only while the log says nothing of why it stopped. When its last lines state an exception of
another cause (an NCCL error, an illegal memory access, an assertion, a compile error, an
interrupt, a compiler's or linker's own "error:"), the log is not cut short: it states a failure
that is not a configuration's, and a capture that died of it says nothing about memory. So does a
notice that the engine is alive and waiting after the phase opened (vLLM's shared-memory broadcast
finding no block for a minute, printed again and again while a worker hangs): a hang is not a
death in capture.

Only the last lines are read (TAIL_CHARS, at most TAIL_LINES): the end of a log is cheap to reach
whatever its length, where a rule over every line would cost a scan of the whole log for
literals made of common letters (prefilter.py). The generic wrappers that only point elsewhere
("Engine core initialization failed. See root cause above", a worker that died) name no cause.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from selfheal.handlers.observer.normalize import _EXC_SUFFIXES, clean, exception_name
from selfheal.handlers.observer.paste import unpasted_str
from selfheal.handlers.observer.prefixes import _ANCHOR, VLLM_HEADER

TAIL_CHARS = 16384
TAIL_LINES = 64

# an exception's own line, after whatever prefix a collector put in front: its name as the
# normalizer knows one (normalize._EXC), or that name lower-cased (a paste retyped or lowered
# whole: "keyerror: ..."), then ": message" or nothing; a warning stops nothing
_EXC_ANY_CASE = exception_name(_EXC_SUFFIXES + tuple(s.lower() for s in _EXC_SUFFIXES))
_EXCEPTION = re.compile(rf"(?:^|[\s\]|>:)])(?<!except )(?<!raise )({_EXC_ANY_CASE})(?::[ \t]*(.*?))?[ \t]*$")
# what says the memory ran out (its rules read it: a stated finding, never a cut one) or says
# nothing of a cause (a wrapper that points at the root cause elsewhere)
_MEMORY_CAUSE = (r"out of memory|OutOfMemory|\bOOM\b|memory (?:is )?exhausted|insufficient memory|not enough memory"
                 r"|[Tt]ried to allocate|cannot allocate|failed to allocate|allocation fail")
_NOT_ANOTHER_CAUSE = re.compile(
    _MEMORY_CAUSE + r"|root cause|initiali[sz]ation failed|failed to start|see (?:the )?(?:above|stack trace|logs?)"
    r"|died|dead|exit(?:ed)? (?:code|status|unexpectedly)|terminated|shut ?down|SystemExit"
    r"|^(?:(?:[\w.]+\.)?(?:EngineDeadError|EngineGenerateError|ChildProcessError|RayTaskError|ActorDiedError"
    r"|WorkerError|RayActorError|ProcessLookupError|BrokenPipeError|ConnectionResetError))\b", re.I)
# a compiler's or a linker's diagnostic ("collect2: error: ld returned 1 exit status",
# "kernel.cu:12:5: error: ...", "fatal error: Python.h: No such file or directory"), as a JIT build
# in a phase prints it: lower-case "error:" after the tool or the file and line, never a logger's "ERROR"
# (its "ld returned 1 exit status" is the build's cause, not a wrapper's pointer to one)
_TOOL_ERROR = re.compile(r"(?:^|\s)(?:[\w./+-]+(?::\d+)*: (?:fatal )?error|fatal error): \S.*$")
_MEMORY = re.compile(_MEMORY_CAUSE, re.I)
# a wrapper that quotes the worker's own error (V1 multiproc_executor get_response: "Worker
# failed with error '<error>', please check the stack trace above for the root cause") is judged
# by the error it quotes, not by its pointer to the root cause
_QUOTED_CAUSE = re.compile(r"failed with error '(.+)', please check")
# the engine still alive after the phase opened, waiting on a worker that hangs (vLLM V1
# distributed/device_communicators/shm_broadcast.py, 0.6+: "No available shared memory broadcast
# block found in 60 seconds. This typically happens when some processes are hanging ...")
_HANG = re.compile(r"No available shared memory broadcast block found in")


# a record as a program writes it (prefixes._ANCHOR: a vLLM header, a worker's "(... pid=N)",
# a traceback and its frames) or a progress bar ("67%|######6   | 45/67"): what a person who
# quotes a sentence of a log in prose does not paste
_LOGGED = re.compile(rf"{_ANCHOR.pattern}|\d%\|")


def logged(tail: str | Callable[[], str]) -> bool:
    """Whether the last lines of a log (`tail`, or a function that reads it) hold a record as a
    program writes it: a log that stops inside a phase does; a message of the phase quoted in a
    sentence, with its header dropped, does not (a commit message quoting the capture notice)."""
    return _LOGGED.search(tail() if callable(tail) else tail) is not None


# a traceback's frame, as Python prints it ('File "/x/y.py", line 3') or IPython does
# ('File ~/x/y.py:3, in f'); frames of PyTorch itself and of Python's standard library say
# nothing of which program ran, a third-party package's or a script's do
_FRAME = re.compile(r'(?i:file) "([^"\n]+)", (?i:line) \d|(?i:file) (~?/[^\s,:]+\.py):\d')
_TELLS_NO_PROGRAM = re.compile(r"(?:site|dist)-packages/(?:torch|torch_npu|triton)/|^<|/lib/python3\.\d+/(?!(?:site|dist)-packages/)")


# a setting whose value names vLLM ("rollout.name=vllm", "'backend': 'vllm'"): a program that
# chose vLLM for one part of its run says so in its overrides, and a traceback of its own
# elsewhere is still its own
_SETTING = re.compile(r"""[\w.-]+\s*=\s*['"]?vllm\b|[\w.-]+['"]?\s*:\s*['"]vllm['"]""", re.I)


def foreign_traceback(tail: str | Callable[[], str]) -> str | None:
    """The frame of another program, when the last lines of a log (`tail`, or a function that
    reads it) are a traceback raised there with no trace of vLLM: no vLLM frame, no record of
    vLLM's logger, no word "vllm" but in a setting's value. A Ray actor's "(Name pid=N)" prefix
    is no trace: other programs run their own actors (verl's WorkerDict computing log-probs),
    and a vLLM worker under Ray prints vLLM's records or frames. PyTorch's out-of-memory error
    is the same in every program that uses it (a fine-tune quantizing weights, a trainer's
    log-probs), so only the traceback around it tells whose it was; a traceback of PyTorch's
    own frames alone tells nothing. None otherwise."""
    text = tail() if callable(tail) else tail
    if "vllm" in _SETTING.sub("", text).lower() or VLLM_HEADER.search(text):
        return None
    frames = [m.group(1) or m.group(2) for m in _FRAME.finditer(text)]
    return next((f for f in reversed(frames) if not _TELLS_NO_PROGRAM.search(f)), None)


def tail_of(text) -> str:
    """The last TAIL_CHARS characters of a log given as text, bytes or logfile.FileBytes, with
    what a paste did to them undone (paste.py) and its ANSI colours gone, as the rest of the log
    is read (a colour reset after "KeyboardInterrupt" hid the exception that ended the log)."""
    n = len(text)
    end = text[max(0, n - TAIL_CHARS):n] if not isinstance(text, str) else text[-TAIL_CHARS:]
    return unpasted_str(clean(end if isinstance(end, str) else bytes(end).decode("utf-8", "replace")))


def another_cause(tail: str | Callable[[], str], since: str = "") -> str | None:
    """The exception line, among the last lines of `tail` from the last one that holds `since`
    on (the line that opened the phase, itself included: an error may name the phase's call;
    all of them when it is not there), that states a cause
    other than memory, or the notice of a hang; None when there is none. `tail` may be a function that reads it (tail_of):
    only a log cut inside a phase needs its end read."""
    lines = (tail() if callable(tail) else tail).splitlines()[-TAIL_LINES:]
    for line in reversed(lines):
        if _HANG.search(line):
            return line.strip()
        m = _EXCEPTION.search(line)
        if m and not m.group(1).lower().endswith("warning"):
            quoted = _QUOTED_CAUSE.search(m.group(2) or "")
            said = quoted.group(1) if quoted else m.group(1) + ": " + (m.group(2) or "")
            if not _NOT_ANOTHER_CAUSE.search(said):
                return line.strip()
        elif m is None:
            tool = _TOOL_ERROR.search(line)
            if tool and not _MEMORY.search(tool.group()):
                return line.strip()
        # looked at last: an error that names the phase's own call opens it and states its cause
        # ("RuntimeError: Failed to find function aclmdlRICaptureBegin", a toolkit without it)
        if since and since in line:
            return None
    return None
