"""`clsr serve`: the concept explorer as a local web application (FastAPI + uvicorn).

    clsr serve --index IDX [--port 8080] [--bm25 BM25_IDX] [--dense DENSE_IDX]

The page (``/``) is plain HTML/JS from ``clsr/static/``, loads nothing from outside this server,
and sits on a JSON API that is usable without it; its OpenAPI description is ``/openapi.json``.
(FastAPI's own ``/docs`` pages are switched off: they fetch their scripts from a CDN.)

Bad requests get a 4xx answer with ``{"detail": "<one line>"}`` and the server carries on.
Needs the ``serve`` extra: ``pip install 'clsr[serve]'``.

Only requests whose ``Host`` header names this server are answered (`HostCheck`): on loopback,
``localhost``, ``127.0.0.1`` and ``[::1]`` (any port), plus the ``--host`` given and the names in
``--allowed-hosts``. Any other Host gets 421. Without the check, any web page the user visits could
rebind its own name to 127.0.0.1 (DNS rebinding) and read the private corpus through this API.

``HEAD`` is answered wherever ``GET`` is, with the same status and headers and no body (RFC 9110 9.3.2;
`HeadAsGet`), so link checkers, ``curl -I`` and health probes work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")  # bind addresses, never names a client sends


def served_names(host: str = "127.0.0.1", allowed_hosts: Sequence[str] = ()) -> list[str]:
    """The Host names a server bound to `host` answers: the loopback names, `host` itself (unless it is a
    wildcard address such as 0.0.0.0) and `allowed_hosts` (``*`` for any, ``*.example.org`` for a domain's
    names), lower-case, IPv6 addresses without brackets."""
    names = [*LOOPBACK_NAMES, host, *allowed_hosts]
    cleaned = (name.strip().lower().removeprefix("[").removesuffix("]") for name in names)
    return list(dict.fromkeys(name for name in cleaned if name not in _WILDCARD_ADDRESSES))


def host_name(header: str) -> str | None:
    """The name in a Host header, lower-case, without its port or an IPv6 address's brackets; None if the
    header is empty or malformed (a port that is not a number, an unclosed bracket)."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket:
            return None
    else:
        name, colon, port = header.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


class HostCheck:
    """ASGI middleware: answers 421 to a request whose Host header is not one of `names` (see `served_names`).

    Starlette's TrustedHostMiddleware does this too, but the Starlette releases that the supported FastAPI
    range allows differ in how they read ``[::1]:8080``; this reads every form the same way.
    """

    def __init__(self, app, names: Sequence[str]):
        self.app, self.names = app, [name.lower() for name in names]
        self.any = "*" in self.names

    def allows(self, header: str) -> bool:
        """Whether a request with this Host header value is answered."""
        if self.any:
            return True
        name = host_name(header)
        return name is not None and any(name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:]))
                                        for allowed in self.names)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"host"), "")
        if self.allows(header):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        from fastapi.responses import JSONResponse

        shown = ", ".join(f"[{n}]" if ":" in n else n for n in self.names)
        response = JSONResponse(status_code=421, content={"detail": f"Host {header[:100]!r} is not served here "
                                                          f"(served: {shown}); to serve another name, start clsr "
                                                          "serve with --allowed-hosts NAME"})
        await response(scope, receive, send)


class HeadAsGet:
    """ASGI middleware: answers a HEAD request as the same GET, with GET's status and headers but no body.

    FastAPI routes declared with ``@app.get`` answer HEAD with 405; RFC 9110 (9.3.2) wants HEAD wherever GET
    is answered. Running the GET keeps the headers (content-type, content-length) identical to GET's. A 405
    to another method then lists HEAD beside GET in its ``Allow`` header.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] != "HEAD":
            return await self.app(scope, receive, _allowing_head(send))

        async def headers_only(message) -> None:
            if message["type"] in ("http.response.body", "http.response.pathsend"):
                if message.get("more_body", False):
                    return  # the rest of the body follows; only the last (empty) message is passed on
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # A copy: the server keeps its own scope saying HEAD (uvicorn sends no body for HEAD either way).
        get_scope = dict(scope, method="GET")
        get_scope.pop("extensions", None)  # no zero-copy file sending (pathsend): the body is dropped anyway
        await self.app(get_scope, receive, headers_only)


def _allowing_head(send):
    """`send`, with HEAD added to a 405's ``Allow: GET`` (HeadAsGet answers HEAD wherever GET is)."""

    async def wrapped(message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = []
            for key, value in message.get("headers", []):
                methods = [m.strip() for m in value.decode("latin-1").split(",")]
                if key.lower() == b"allow" and "GET" in methods and "HEAD" not in methods:
                    value = ", ".join([*methods, "HEAD"]).encode("latin-1")
                headers.append((key, value))
            message = dict(message, headers=headers)
        await send(message)

    return wrapped


def create_app(explorer, allowed_hosts: Sequence[str] | None = None) -> fastapi.FastAPI:  # noqa: F821
    """The FastAPI application over a :class:`clsr.interpret.explorer.Explorer`.

    Endpoints are ``async``: they run one at a time on the event loop's thread, which is what
    Pyserini's JVM objects and the shared caches want; each answers in milliseconds to a second.
    Requests are answered only for the Host names `allowed_hosts` (default: the loopback names;
    see `served_names` and `HostCheck`); others get 421. HEAD is answered wherever GET is (`HeadAsGet`).
    """
    from fastapi import FastAPI, Query
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    from clsr import __version__
    from clsr.interpret.explorer import ExplorerError

    app = FastAPI(title="clsr concept explorer", version=__version__, docs_url=None, redoc_url=None,
                  description="Search a concept index, see each hit's score split into its shared concepts, "
                              "the words behind each concept, concept pages, steering and comparisons.")

    app.add_middleware(HostCheck, names=list(allowed_hosts) if allowed_hosts is not None else served_names())
    app.add_middleware(HeadAsGet)  # added last, so outermost: a HEAD refused by HostCheck gets no body either

    @app.exception_handler(ExplorerError)
    async def explorer_error(request, error: ExplorerError):
        return JSONResponse(status_code=error.status, content={"detail": error.message})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in error.errors())
        return JSONResponse(status_code=422, content={"detail": problems})

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info", summary="The index: documents, K, SAE, and which methods can be compared")
    async def info():
        return explorer.info()

    @app.get("/api/search", summary="Ranked hits, each score split exactly into its shared concepts")
    async def search(q: str = Query("", description="query text"),
                     k: int = Query(10, description="hits, 1 to 100"),
                     steer: list[str] = Query([], description="c<id>=<factor>: 0 suppresses, 1 keeps, >1 boosts; "
                                                              "a concept the query lacks is added (as --boost)")):
        return explorer.search(q, k, explorer.parse_steering(steer))

    @app.get("/api/evidence", summary="The words of the query and/or a passage that drive one concept")
    async def evidence(concept: str = Query(..., description="e.g. c1234"), q: str | None = None,
                       docid: str | None = None, method: str = Query("pooling", description="pooling or occlusion")):
        return explorer.word_evidence(concept, q, docid, method)

    @app.get("/api/concepts", summary="Concepts whose descriptions match some words (to add one to the steering)")
    async def concepts(match: str = Query("", description="description words, e.g. 'bone, fracture'"),
                       limit: int = Query(5, ge=1, le=50)):
        return explorer.match_concepts(match, limit)

    @app.get("/api/concepts/{concept}", summary="A concept: description, df, region, histogram, top passages")
    async def concept(concept: str):
        return explorer.concept(concept)

    @app.get("/api/documents/{docid}", summary="A passage and its top concepts")
    async def document(docid: str):
        return explorer.document(docid)

    @app.get("/api/compare", summary="CL-SR, hybrid and (when given) BM25 and dense side by side")
    async def compare(q: str = "", k: int = 10):
        return explorer.compare(q, k)

    return app


def port_is_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080, threads: int = 1,
          allowed_hosts: Sequence[str] = (), **options) -> None:
    """Open the index (options as for :class:`clsr.interpret.explorer.Explorer`) and serve until interrupted.

    Requests are answered for the Host names `served_names(host, allowed_hosts)`; others get 421.

    `threads` is torch's thread count. One is the default: a single query gains nothing from more,
    and on a busy machine threads that wait on each other make a query 25x slower (measured on two
    shared cores: 525 ms with two threads, 21 ms with one).
    """
    import torch
    import uvicorn

    from clsr.interpret.explorer import Explorer

    torch.set_num_threads(threads)

    explorer = Explorer(index_dir, **options)
    names = served_names(host, allowed_hosts)
    shown = f"[{host}]" if ":" in host else host
    print(f"clsr explorer for {index_dir} ({explorer.manifest.documents} passages"
          f"{', described' if explorer.catalogue else ', no descriptions: run clsr describe'}) "
          f"on http://{shown}:{port}/  (API: http://{shown}:{port}/openapi.json); answers the Host names "
          f"{', '.join(f'[{n}]' if ':' in n else n for n in names)} (add more with --allowed-hosts)", flush=True)
    uvicorn.run(create_app(explorer, names), host=host, port=port, log_level="warning")
