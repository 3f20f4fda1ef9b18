"""The FastAPI application: routers under /api/v1, errors as JSON with a code, no stack traces."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from app.api import openapi
from app.api.hardening import Hardening
from app.api.routes import experiments, health, insights, online, runs, strategies
from app.core.config import get_settings
from app.core.db import warm_up
from app.dashboard import routes as dashboard
from app.errors import MixlabError, NotReady
from app.services.dispatch import Polling, set_dispatcher

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"
DB_RETRY_AFTER_S = 5
HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    415: "unsupported_media_type",
}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        e = next(e for e in errors if e.get("type") == "json_invalid")
        return (
            400,
            "malformed_json",
            f"the request body is not valid JSON: {e.get('ctx', {}).get('error', e['msg'])}",
        )
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return 422, "invalid_input", "; ".join(parts)


def _unavailable(exc: DBAPIError) -> bool:
    """Lost or refused connections (and a server shutting down), as opposed to a bad statement."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the database connection, then wire the hand-off of work for this process: Celery messages in
    service mode; in embedded mode the in-process worker (planner threads, and a trainer unless
    ``MIXLAB_EMBEDDED_TRAINER=false``)."""
    from workers.dispatch import CeleryDispatcher
    from workers.embedded import EmbeddedWorker

    settings = get_settings()
    warm_up()
    if settings.executor == "celery":
        set_dispatcher(CeleryDispatcher())
        try:
            yield
        finally:
            set_dispatcher(Polling())
        return
    worker = EmbeddedWorker(poll_s=0.5, train=settings.embedded_trainer).start()
    try:
        yield
    finally:
        worker.stop()


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        lifespan=lifespan,
        title="mixlab",
        version="0.1.0",
        description="Data-mixture optimisation for LM pre-training: train proxy models on candidate "
        "mixtures, fit mixture → loss, and recommend the weights to use at scale.",
    )

    @app.exception_handler(MixlabError)
    async def _mixlab_error(request: Request, exc: MixlabError) -> JSONResponse:
        headers = {"Retry-After": str(int(exc.retry_after))} if isinstance(exc, NotReady) else None
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(*_validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        """Framework errors (unknown path, wrong method, body over the limit) in the API's error shape."""
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return _error(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        """The database is down or unreachable: 503, retry later. Other database errors are bugs: 500."""
        if isinstance(exc, DBAPIError) and not _unavailable(exc):
            return await _unexpected(request, exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _error(
            503,
            "database_unavailable",
            "the database is not reachable right now; retry after Retry-After seconds",
            {"Retry-After": str(DB_RETRY_AFTER_S)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "something went wrong on the server; the error was logged")

    app.add_middleware(Hardening, settings=settings)
    app.include_router(health.router)
    for module in (experiments, runs, online, insights, strategies):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(dashboard.router)
    openapi.install(app, API_PREFIX)
    return app
