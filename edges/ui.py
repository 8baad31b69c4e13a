"""`selfheal ui`: the log in datasette, on loopback, behind a token.

Why a token: the log file is owner-only (0600: it holds log excerpts and configs of production
servers, and the keys of sealed incidents), and a port on 127.0.0.1 is open to every user of the
machine. So every request must carry the token `selfheal ui` prints, once in the address (it
becomes a cookie for that browser) or as the cookie; anything else gets 403. Whoever can read
the printed address could read the file anyway.

datasette is an optional extra (`pip install 'vllm-selfheal[ui]'`): without it, `serve` raises
UiUnavailable, which says how to install it.
"""
from __future__ import annotations

import copy
import hmac
import json
import secrets
import socket
from collections.abc import Callable
from http.cookies import SimpleCookie
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

try:  # an optional extra: a missing one is reported when `ui` is asked for, not on import
    import uvicorn
    from datasette.app import Datasette
except ModuleNotFoundError as exc:  # pragma: no cover - the suite installs the extra
    Datasette = uvicorn = None
    _MISSING = exc.name
else:
    _MISSING = None

#: the shipped metadata: column descriptions, hidden tables, canned queries (keyed "selfheal")
METADATA = "ui_metadata.json"
COOKIE = "selfheal_ui"
TOKEN_PARAM = "token"


class UiUnavailable(OSError):
    """datasette (the `ui` extra) is not installed: a missing program, like any other OSError."""


def require() -> None:
    """UiUnavailable, saying how to install it, when datasette cannot be served."""
    if _MISSING is not None:
        raise UiUnavailable(f"`selfheal ui` needs datasette, which is not installed (no module {_MISSING!r}): "
                            f"pip install 'vllm-selfheal[ui]'")


def metadata(database: str) -> dict:
    """The shipped metadata, for the database datasette names `database` (the file's stem)."""
    shipped = json.loads(files("selfheal.edges").joinpath(METADATA).read_text(encoding="utf-8"))
    meta = copy.deepcopy(shipped)
    meta["databases"] = {database: shipped["databases"]["selfheal"]}
    return meta


def token_gate(app, token: str):
    """ASGI middleware: a request with `?token=TOKEN` gets the cookie and is sent to the same
    address without it; one with the cookie passes; every other one gets 403."""
    async def gate(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = dict(query).get(TOKEN_PARAM)
        if given is not None and hmac.compare_digest(given, token):
            rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAM])
            where = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
            return await _respond(send, 302, b"", [(b"location", where.encode("latin-1")), (
                b"set-cookie", f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode())])
        cookies = SimpleCookie()
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                cookies.load(value.decode("latin-1"))
        held = cookies.get(COOKIE)
        if held is not None and hmac.compare_digest(held.value, token):
            return await app(scope, receive, send)
        return await _respond(send, 403, b"selfheal ui: open the address `selfheal ui` printed (it carries the "
                                         b"token that lets this browser in)\n", [(b"content-type", b"text/plain")])
    return gate


async def _respond(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(path: Path, *, host: str = "127.0.0.1", port: int = 8001, token: str | None = None,
          report: Callable[[str], None] = print) -> None:
    """Serve the SQLite log at `path` read-only until SIGINT/SIGTERM; `report` hears the address
    to open (with the token). Port 0 picks a free one."""
    require()
    token = token or secrets.token_urlsafe(24)
    ds = Datasette([str(path)], metadata=metadata(path.stem), settings={
        # an incident or a failure excerpt is read whole; the pretty-JSON plugin lays out `data`
        "truncate_cells_html": 0, "sql_time_limit_ms": 5000})
    # bound here, before uvicorn starts, so the address printed is the one listened on (port 0)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # a browser opening the address at once waits in the backlog, never refused
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    report(f"serving {path.absolute()} read-only at http://{shown}:{bound}/ ; open "
           f"http://{shown}:{bound}/{path.stem}?{TOKEN_PARAM}={token}")
    config = uvicorn.Config(token_gate(ds.app(), token), log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
