"""What every response gets, whatever the route: security headers, OPTIONS with ``Allow``, per-key rate
limits. Pure ASGI middleware (no per-request task or body copy), so it costs microseconds on ask/tell.

- Headers: CSP allowing only the dashboard's own script files: no inline script, no other origin
  ('unsafe-eval' because Plotly's WebGL traces, the parallel-coordinates plot among them, compile
  shaders with ``new Function``; inline ``style=`` meters need 'unsafe-inline' styles), no framing,
  nosniff, no referrer. The OpenAPI pages (/docs, /redoc) load
  Swagger UI and ReDoc from a CDN, so they get every header but the CSP.
- OPTIONS on a known path answers 204 with the methods its routes take in ``Allow``.
- Bodies over ``MIXLAB_MAX_JSON_BYTES`` get 413 ``payload_too_large``, by Content-Length before a byte
  is read, or as soon as a chunked body passes the limit. Corpus uploads (paths ending in ``/corpus``)
  stream to disk under their own ``MIXLAB_MAX_UPLOAD_BYTES`` instead.
- Rate limit (``MIXLAB_RATE_LIMIT``, e.g. ``1200/minute``; empty turns it off): a moving window per API
  key (its SHA-256, never the key), per client address for requests without one. Over the limit: 429
  ``rate_limited`` with ``Retry-After``. Storage is ``MIXLAB_RATE_LIMIT_STORAGE``: ``memory://`` counts
  per server process, ``redis://…`` across all of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import Any

from limits import parse, storage, strategies
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import COOKIE
from app.core.config import Settings

CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
DOCS_PATHS = ("/docs", "/redoc")


class Hardening:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body = settings.max_json_bytes
        self.limit = parse(settings.rate_limit) if settings.rate_limit else None
        self.limiter = strategies.MovingWindowRateLimiter(
            storage.storage_from_string(settings.rate_limit_storage)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = list(SECURITY_HEADERS)
        if not path.startswith(DOCS_PATHS):
            headers.append((b"content-security-policy", CSP.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        if scope["method"] == "OPTIONS":
            await self._options(scope, send_with_headers)
            return
        if self.limit is not None and path.startswith("/api/"):
            caller = _caller(scope)
            if not self.limiter.hit(self.limit, caller):
                reset, _ = self.limiter.get_window_stats(self.limit, caller)
                retry = max(1, math.ceil(reset - time.time()))
                message = f"more than {self.limit} requests for this key; retry after {retry} s"
                await _json(
                    send_with_headers, 429, "rate_limited", message, [(b"retry-after", str(retry).encode())]
                )
                return
        if path.endswith("/corpus"):
            await self.app(scope, receive, send_with_headers)
            return
        await self._bounded(scope, receive, send_with_headers)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        too_large = f"the request body exceeds {self.max_body} bytes (MIXLAB_MAX_JSON_BYTES)"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await _json(send, 413, "payload_too_large", too_large)
            return
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if started:
                raise
            await _json(send, 413, "payload_too_large", too_large)

    async def _options(self, scope: Scope, send: Send) -> None:
        methods = _documented_methods(scope["app"], scope["path"])
        if not methods:
            await _json(send, 404, "not_found", f"no route at {scope['path']}")
            return
        allow = ", ".join(sorted({*methods, "OPTIONS"}))
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow.encode())]})
        await send({"type": "http.response.body", "body": b""})


def _documented_methods(app: Any, path: str) -> list[str]:
    """The methods of the most specific documented path matching ``path``, as the OpenAPI document says
    (``/runs/import`` is its own path, not ``/runs/{run_id}`` with run_id "import")."""
    if not hasattr(app.state, "allow_table"):
        table = []
        for template, item in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((template.count("{"), re.compile(f"^{pattern}$"), [m.upper() for m in item]))
        app.state.allow_table = sorted(table, key=lambda row: row[0])
    return next((methods for _, regex, methods in app.state.allow_table if regex.match(path)), [])


class _BodyTooLarge(Exception):
    pass


def _caller(scope: Scope) -> str:
    """The rate-limit key: a hash of the bearer key or dashboard cookie, else the client address."""
    headers = dict(scope["headers"])
    auth = headers.get(b"authorization", b"")
    if not auth:
        cookies = headers.get(b"cookie", b"")
        auth = next((c for c in cookies.split(b";") if c.strip().startswith(f"{COOKIE}=".encode())), b"")
    if auth:
        return "key:" + hashlib.sha256(auth.strip()).hexdigest()[:32]
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


async def _json(
    send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
