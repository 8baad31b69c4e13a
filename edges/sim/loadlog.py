"""The load phase in vLLM's words: access lines, the stats logger, a co-tenant's OOM.

What `simulate` prints after the server is ready, from the Load the scheduler model computed
(handlers/models/serving.py); returns the excerpt of the load phase's failure, if any.
"""
from __future__ import annotations

from selfheal.edges.sim import logtext as lt
from selfheal.edges.sim.logtext import API, Log
from selfheal.handlers.models.memory import CUDA_CTX, GIB
from selfheal.handlers.models.serving import Load
from selfheal.schemas.scenario import Scenario
from selfheal.schemas.serving import ServingConfig


def load_log(log: Log, s: Scenario, c: ServingConfig, load: Load) -> list[str]:
    t0 = log.t
    if not log.renders:
        log.t = t0 + load.duration_s  # the clock is all a quiet log keeps, and the load ends here
        return []
    events: list[tuple[float, int, object]] = [(t, 1, ("200 OK", user)) for t, user in load.finishes]
    events += [(t, 1, ("400 Bad Request", user)) for t, user in load.rejections]
    events += [(x.t, 0, x) for x in load.stats]
    if load.cotenant_oom:
        events.append((load.cotenant_oom.t, 2, load.cotenant_oom))
    storm, oom_lines, refused = [], [], []
    for t, _, ev in sorted(events, key=lambda e: (e[0], e[1])):
        log.t = t0 + t
        if isinstance(ev, tuple):
            line = log.raw(API, f'INFO:     127.0.0.1:{50000 + ev[1]} - "POST /v1/completions HTTP/1.1" {ev[0]}')
            refused += line if ev[0] != "200 OK" else []
        elif ev is load.cotenant_oom:
            oom_lines += _cotenant_oom_log(log, s, ev)
        else:
            line = log.info(API, "loggers.py:259", lt.stats_line(ev.prompt_tps, ev.generation_tps, ev.running,
                                                                 ev.waiting, ev.kv_usage))
            if ev.preemptions:
                storm += line
    log.t = t0 + load.duration_s
    log.raw(API, "INFO:     Shutting down\nINFO:     Waiting for application shutdown.\n"
                 "INFO:     Application shutdown complete.")
    if load.failure_kind == "cotenant_oom":
        return oom_lines
    if load.failure_kind == "requests_rejected":
        return refused[:5]
    if load.failure_kind == "preemption_storm":
        return storm[:5]
    return []


def _cotenant_oom_log(log: Log, s: Scenario, ev) -> list[str]:
    """F8 is the co-tenant's own torch OOM; the canary harness tags its lines with the co-tenant."""
    co = ev.cotenant
    vllm_pid = lt.ENGINE_PID if s.tensor_parallel_size == 1 else lt.WORKER_PID0 + ev.gpu
    used = round(co.used_gib * GIB)
    msg = lt.torch_oom(tried=ev.tried, gpu=ev.gpu, total=round(s.gpu.total_gib * GIB), free=ev.free,
                       processes=[(vllm_pid, ev.vllm_bytes)] + ev.others, self_pid=co.pid, self_bytes=used,
                       allocated=max(0, used - CUDA_CTX))
    return log.raw(f"{co.name} pid={co.pid}", f"torch.OutOfMemoryError: {msg}")
