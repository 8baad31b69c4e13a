"""The canary's HTTP to a vLLM server: one plain request, one completion (JSON or streamed).

Split from edges/vllm_backend.py (whose module doc holds the conventions: TTFT, tokens, keys).
"""
from __future__ import annotations

import http.client
import json
import time

from selfheal.edges import credentials


def plain_request(host: str, port: int, method: str, path: str, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _error_text(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        error = body.get("error")
        msg = body.get("message") or (error.get("message") if isinstance(error, dict) else error) or raw.decode()
    except (ValueError, AttributeError):
        msg = raw.decode("utf-8", "replace")
    return str(msg).strip()[:500]


def one_request(host: str, port: int, model: str, prompt: str, max_tokens: int, stream: bool,
                 timeout: float, api_key: str | None = None) -> tuple[float, float | None, int] | str:
    """One completion: (latency ms, TTFT ms or None, completion tokens), or an error string."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json", **credentials.bearer(api_key)})
        resp = conn.getresponse()
        if resp.status == 401:   # vLLM's body is {"error": "Unauthorized"}: say so, and nothing of the key
            resp.read()
            return "HTTP 401: unauthorized (the server wants another API key)"
        if resp.status != 200:
            return f"HTTP {resp.status}: {_error_text(resp.read())}"
        if not stream:
            usage = json.loads(resp.read()).get("usage") or {}
            return (time.monotonic() - t0) * 1000, None, int(usage.get("completion_tokens", 0))
        ttft, usage, chunks = None, None, 0
        for raw in resp:       # server-sent events: `data: {...}` lines, ending with `data: [DONE]`
            if time.monotonic() - t0 > timeout:
                return f"timed out after {timeout:.0f} s"
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                tokens = int(usage["completion_tokens"]) if usage else chunks
                return (time.monotonic() - t0) * 1000, ttft, tokens
            chunk = json.loads(payload)
            if "error" in chunk or chunk.get("object") == "error":
                return f"stream error: {_error_text(payload)}"
            if chunk.get("choices"):
                chunks += 1
                ttft = ttft if ttft is not None else (time.monotonic() - t0) * 1000
            usage = chunk.get("usage") or usage
        return "stream ended before [DONE]"
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()
