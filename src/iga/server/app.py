"""The ASGI application: routes, the web page, authentication, body limits and error answers.

Every failure is an answer with a status and one clear sentence (``{"error", "detail"}``): bad input is a 4xx,
a full queue a 503 with Retry-After; a 500 means a bug or a model that cannot run, never bad input.
"""

from __future__ import annotations

import base64
import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from iga.server.config import MAX_BODY_BYTES, ServerConfig
from iga.server.service import ApiError, Service

WEB = Path(__file__).resolve().parent / "web"
OPEN_PATHS = ("/", "/static/", "/docs", "/openapi.json", "/favicon.ico")  # served without a token
log = logging.getLogger("iga.server")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
    return JSONResponse(body, status_code=status, headers=headers)


class Guardrails:
    """ASGI middleware: the token check and the body-size limit, before any route reads the request."""

    def __init__(self, app: Any, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.token and not self._open(path) and not self._authorised(headers, scope):
            return await _json(401, {"error": "unauthorised", "detail": "this server needs its token: send "
                                     "'Authorization: Bearer TOKEN' (or HTTP Basic with the token as password)"},
                               {"WWW-Authenticate": 'Bearer realm="iga", Basic realm="iga"'})(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _json(413, {"error": "too large", "detail": f"the request body is {length} bytes; this "
                                     f"server takes at most {self.max_body:,}"})(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:  # a chunked body without a length: stop reading at the limit
                raise ApiError(413, f"the request body exceeds {self.max_body:,} bytes", kind="too large")
            return message

        await self.app(scope, counted, send)

    @staticmethod
    def _open(path: str) -> bool:
        return path == "/" or any(path.startswith(p) for p in OPEN_PATHS[1:])

    def _authorised(self, headers: dict[str, str], scope: dict) -> bool:
        auth = headers.get("authorization", "")
        given = ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        elif auth.lower().startswith("basic "):
            try:
                given = base64.b64decode(auth[6:].strip()).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = ""
        elif scope.get("path", "").endswith("/events"):  # EventSource cannot send headers
            from urllib.parse import parse_qs

            given = (parse_qs(scope.get("query_string", b"").decode()).get("token") or [""])[0]
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())


def build_app(config: ServerConfig) -> FastAPI:
    from iga import __version__
    from iga.server import routes_a1111, routes_iga

    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.queue.stop()
        service.uploads.close()

    app = FastAPI(title="iga serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A1111-compatible API (/sdapi/v1), iga's own API (/iga/v1) and a preset-first page "
                              "(/). Every request goes through the model's recipe guard.")
    app.state.service = service
    app.include_router(routes_a1111.router)
    app.include_router(routes_iga.router)
    _error_handlers(app)
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def docs():  # FastAPI's own docs page loads Swagger UI from a CDN: this one is served from the package
        return FileResponse(WEB / "docs.html", headers={"Cache-Control": "no-cache"})

    app.add_middleware(Guardrails, token=config.token, max_body=MAX_BODY_BYTES)
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return _json(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in err.get("loc", ()))
        return _json(422, {"error": "bad request", "detail": f"{where}: {err.get('msg')}"})

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        log.exception("unexpected error")
        return _json(500, {"error": "internal", "detail": f"{type(exc).__name__}: {exc}"[:500]})

