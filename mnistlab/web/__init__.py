"""The app ("给图识物") as a web page: draw or upload a picture, see what the model thinks and what it saw.

``create_app(run)`` builds a FastAPI app around one loaded run; ``serve(run)`` runs it with uvicorn on
127.0.0.1. Everything the page needs (HTML, JS, CSS) ships in this package, so it works offline.

API:
- ``POST /api/predict``: a picture as a multipart upload (field ``file``), a PNG/JPEG data URL
  (multipart field ``image``, or JSON ``{"image": "data:image/png;base64,..."}``), or raw ``image/*``
  bytes → ``{"class", "index", "probability", "probabilities", "top", "input", "input_pixels", ...}``;
- ``GET /api/model``: architecture, classes, test accuracy, preprocessing;
- ``GET /healthz``.

Bad input gets a JSON ``{"error": "..."}`` with a 4xx status: 400 (not an image, malformed JSON, bad
data URL, a picture over ``max_pixels``, a ``Host`` header not allowed), 408 (a body that takes longer
than ``BODY_TIMEOUT`` to arrive), 413 (upload larger than ``max_upload`` bytes), 415 (unsupported content
type), 422 (nothing to recognise, e.g. an empty canvas); 503 when more than ``QUEUE_PER_DECODER`` pictures
per decoder wait. Server faults answer 500 with no traceback (it goes to the log). No answer names a path
on the server.

Memory is bounded by design: a picture's size is read from its header and refused above ``max_pixels``
(decoded pixels: JPEG decodes reduced), and at most ``max_decodes`` pictures (default: one per core)
are decoded and predicted at once, so the peak is about ``max_decodes`` × 12 bytes × ``max_pixels``
over the model. The ``Host`` header must name this server (localhost names, the bound address, or an
``allow_hosts`` name), so a web page cannot reach it through DNS rebinding.

>>> app = create_app("runs/main")                 # doctest: +SKIP
>>> serve("runs/main", port=8000)                  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnistlab.errors import ConfigError, EmptyImageError, ImageError
from mnistlab.predict import Prediction, Predictor

MAX_UPLOAD = 4 * 1024 * 1024
# Decoded pixels of one picture (a JPEG photo is decoded at 1/2..1/8 scale, so 50 MP photos fit): about
# 12 bytes each at the peak of preparing it (measured: +46 MB for a 1990×1990 RGBA PNG).
MAX_PIXELS = 4_000_000
QUEUE_PER_DECODER = 8  # pictures that may wait per decoder before the server answers 503
QUEUE_TIMEOUT = 30.0  # seconds a picture may wait for a decoder
BODY_TIMEOUT = 30.0  # seconds a request body may take to arrive (a 1 byte/s client is cut off)
KEEP_ALIVE = 5  # seconds an idle keep-alive connection is kept
MAX_CONNECTIONS = 200  # uvicorn answers 503 beyond this many open connections
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}  # fmt: skip
# The page may only talk to this server: a stray CDN link would fail here, not silently phone out.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
}
log = logging.getLogger("mnistlab.web")


class ApiError(Exception):
    """A client mistake, answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _static_files() -> dict[str, bytes]:
    folder = resources.files("mnistlab.web") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


def create_app(
    run: str | os.PathLike[str],
    which: str = "best",
    kind: str | None = None,
    thicken: bool | None = None,
    max_upload: int = MAX_UPLOAD,
    *,
    max_pixels: int = MAX_PIXELS,
    max_decodes: int | None = None,
    allow_hosts: Iterable[str] = (),
    host: str = "127.0.0.1",
    body_timeout: float = BODY_TIMEOUT,
) -> FastAPI:
    """A FastAPI app serving the page and the JSON API for the model in ``run``.

    ``max_decodes`` (default: the CPU cores this process may use) bounds the pictures decoded and
    predicted at once; ``allow_hosts`` adds names to what the ``Host`` header may say besides the
    localhost names and ``host``, the address the server binds.
    """
    if max_upload < 1:
        raise ConfigError(f"max_upload must be ≥ 1 byte, got {max_upload}")
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be ≥ 1, got {max_pixels}")
    if not 0 < body_timeout < float("inf"):
        raise ConfigError(f"body_timeout must be a positive number of seconds, got {body_timeout}")
    decoders = max_decodes if max_decodes is not None else len(os.sched_getaffinity(0))
    if decoders < 1:
        raise ConfigError(f"max_decodes must be ≥ 1, got {decoders}")
    allowed = _allowed_hosts(host, allow_hosts)
    limiter = anyio.CapacityLimiter(decoders)  # the gate a picture waits at (with a timeout)
    threads = anyio.CapacityLimiter(decoders)  # the threads the pictures through the gate run on
    waiting = 0

    predictor = Predictor(run, which=which, kind=kind, thicken=thicken)
    files = _static_files()
    # No /docs: Swagger UI loads its JS from a CDN, and the page must work offline.
    app = FastAPI(title="mnistlab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.predictor = predictor

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        return error(e.status, e.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, e: RequestValidationError) -> JSONResponse:
        return error(422, f"invalid request: {e.errors()[:1]}")

    @app.exception_handler(Exception)
    async def _crash(req: Request, e: Exception) -> JSONResponse:
        log.exception("error serving %s %s", req.method, req.url.path)
        return error(500, "internal error (see the server log)")

    app.add_middleware(_Guard, allowed=allowed)

    @app.api_route("/", methods=["GET", "HEAD"])
    async def index() -> Response:
        return Response(files["index.html"], media_type=STATIC["index.html"])

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in files or name == "index.html":
            raise ApiError(404, f"no such file: {name}")
        return Response(files[name], media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    info = predictor.info()
    # The page shows which checkpoint answers, not where it lies on the server's disk.
    info["checkpoint"] = Path(info.get("checkpoint") or "").name

    @app.get("/api/model")
    async def model() -> dict:
        return info

    @app.post("/api/predict")
    async def predict(request: Request) -> JSONResponse:
        nonlocal waiting
        t0 = time.perf_counter()
        data, name = await _read_picture(request, max_upload, body_timeout)
        _check_pixels(data, name, max_pixels)
        if waiting >= decoders * QUEUE_PER_DECODER:
            raise ApiError(503, f"server busy: {waiting} pictures are waiting; try again in a moment")
        waiting += 1
        try:
            with anyio.fail_after(QUEUE_TIMEOUT):
                await limiter.acquire()
        except TimeoutError:
            raise ApiError(503, "server busy: no decoder came free in time; try again in a moment") from None
        finally:
            waiting -= 1
        try:
            # limiter=: the picture runs on one of our ``decoders`` threads, not anyio's pool of 40.
            pred = await anyio.to_thread.run_sync(predictor.predict_one, data, name, limiter=threads)
        except EmptyImageError as e:
            raise ApiError(422, str(e)) from None
        except ImageError as e:
            raise ApiError(400, str(e)) from None
        finally:
            limiter.release()
        # A JSONResponse as it is: FastAPI would otherwise walk the 28×28 pixel lists value by value
        # (jsonable_encoder), which cost more than preparing the picture.
        return JSONResponse(_answer(pred, predictor.kind, time.perf_counter() - t0))

    return app


_RAW_SECURITY_HEADERS = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]


class _Guard:
    """Refuses a ``Host`` header that does not name this server and adds the security headers to every
    answer. Plain ASGI: Starlette's ``@app.middleware("http")`` wraps each request in tasks and streams,
    which cost more than the model's answer (measured 0.4 ms a request)."""

    def __init__(self, app: Any, allowed: set[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in _RAW_SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + _RAW_SECURITY_HEADERS}
            await send(message)

        host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
        if not _host_allowed(host, self.allowed):
            # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends its own Host.
            message = "Host header not allowed (start the server with --allow-host NAME to add one)"
            return await JSONResponse({"error": message}, status_code=400)(scope, receive, send_secured)
        await self.app(scope, receive, send_secured)


def _answer(pred: Prediction, kind: str, seconds: float) -> dict:
    d = pred.to_dict()
    d.pop("source", None)
    prepared = pred.prepared
    assert prepared is not None
    d["classes"] = list(pred.class_names)
    d["input"] = "data:image/png;base64," + base64.b64encode(prepared.to_png()).decode("ascii")
    d["input_pixels"] = prepared.image.tolist()
    d["kind"] = kind
    d["bbox"] = list(prepared.bbox) if prepared.bbox else None
    d["time_ms"] = round(seconds * 1000, 2)
    return d


def _allowed_hosts(host: str, extra: Iterable[str]) -> set[str]:
    names = {*LOCAL_NAMES, host.strip("[]").lower(), *(h.strip().strip("[]").lower() for h in extra if h.strip())}
    if host in ("0.0.0.0", "::", ""):  # every interface: this machine's own names too
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names


def _host_allowed(header: str, allowed: set[str]) -> bool:
    """Whether a ``Host`` header names this server: an allowed name, ``*.localhost``, or, when the server
    listens on every interface, any IP address (a rebinding page always sends its own domain name)."""
    name = header.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if not name:
        return False
    if name in allowed or name.endswith(".localhost"):
        return True
    if "0.0.0.0" in allowed or "::" in allowed:
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False
    return False


def _check_pixels(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse a picture larger than ``max_pixels`` from its header alone, before any pixel is decoded."""
    from PIL import Image

    from mnistlab.preprocess import DRAFT_SIDE

    try:
        with Image.open(io.BytesIO(data)) as im:
            full = im.size
            if im.format == "JPEG":
                im.draft(im.mode, (DRAFT_SIDE, DRAFT_SIDE))  # as preprocess decodes it: reduced
            w, h = im.size
    except Exception:  # not an image, or a header PIL refuses: the decoder says why, in one line
        return
    if w * h > max_pixels:
        raise ApiError(
            400,
            f"{name}: image too large to decode here ({full[0]}×{full[1]} pixels; this server takes up to "
            f"{max_pixels / 1e6:g} megapixels; make it smaller)",
        )


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) before or while it arrives, and a body
    slower than ``timeout`` seconds in all (408)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, f"bad Content-Length header: {length!r}")
        if int(length) > limit:
            raise ApiError(413, f"upload too large: {int(length):,} bytes (the limit is {limit:,})")
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"upload too large: more than {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"request body too slow: not complete after {timeout:g} s") from None
    return b"".join(chunks)


async def _read_picture(request: Request, limit: int, timeout: float) -> tuple[bytes, str]:
    """The picture's bytes and a name for messages, from any of the accepted request shapes."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request, limit, timeout)
    if not body:
        raise ApiError(400, "empty request: send a picture (multipart field 'file', a data URL, or image bytes)")
    if ctype == "multipart/form-data":
        # Parse the body already read (and size-checked) by replaying it to a fresh Request.
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=2, max_fields=20, max_part_size=limit)
        except Exception as e:  # python-multipart raises several types for broken bodies
            raise ApiError(400, f"malformed multipart body: {e}") from None
        upload = form.get("file")
        if upload is not None and not isinstance(upload, str):
            data = await upload.read()
            if not data:
                raise ApiError(400, f"the uploaded file {upload.filename!r} is empty")
            return data, upload.filename or "upload"
        if isinstance(form.get("image"), str):
            return _data_url(form["image"]), "image"
        raise ApiError(400, "multipart body without a 'file' upload or an 'image' data URL")
    if ctype == "application/json":
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"malformed JSON: {e}") from None
        except RecursionError:
            raise ApiError(400, "malformed JSON: nested too deeply") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str):
            raise ApiError(400, 'JSON body must be an object {"image": "data:image/png;base64,..."}')
        return _data_url(obj["image"]), "image"
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return body, "upload"
    raise ApiError(415, f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data, JSON or image/*")


def _data_url(url: str) -> bytes:
    """Bytes of a ``data:image/...;base64,`` URL (plain base64 is accepted too)."""
    payload = url
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ApiError(400, "image must be a base64 data URL like data:image/png;base64,...")
        if not header[5:].startswith("image/"):
            raise ApiError(400, f"data URL is not an image: {header[:40]!r}")
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image data URL holds invalid base64") from None
    if not data:
        raise ApiError(400, "image data URL is empty")
    return data


def _check_address(host: str, port: int) -> None:
    """Fail with one line, before loading anything, when the address cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind(address)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def serve(
    run: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    which: str = "best",
    kind: str | None = None,
    thicken: bool | None = None,
    max_upload: int = MAX_UPLOAD,
    access_log: bool = True,
    threads: int = 1,
    max_pixels: int = MAX_PIXELS,
    max_decodes: int | None = None,
    allow_hosts: Iterable[str] = (),
    body_timeout: float = BODY_TIMEOUT,
) -> None:
    """Serve the page and API with uvicorn until interrupted (localhost only unless ``host`` says so).

    ``threads`` is torch's per-request thread count: one picture is too small to gain from more, and
    concurrent requests already keep every core busy.
    """
    import torch
    import uvicorn

    if not 0 <= port <= 65535:
        raise ConfigError(f"port must lie in 0..65535, got {port}")
    _check_address(host, port)
    if threads > 0:
        import cv2

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)  # the photo recipe's filters: as small as torch's work per picture
    app = create_app(
        run, which=which, kind=kind, thicken=thicken, max_upload=max_upload, max_pixels=max_pixels,
        max_decodes=max_decodes, allow_hosts=allow_hosts, host=host, body_timeout=body_timeout,
    )  # fmt: skip
    print(f"mnistlab: serving {app.state.predictor.loaded.path} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(
        app, host=host, port=port, access_log=access_log, log_level="info" if access_log else "warning",
        timeout_keep_alive=KEEP_ALIVE, limit_concurrency=MAX_CONNECTIONS,
    )  # fmt: skip
