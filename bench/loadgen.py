"""A lean HTTP/1.1 keep-alive client on asyncio streams, for load benchmarks.

Why not httpx: sixteen httpx clients in threads took several times more CPU per request than this, on
the same 2 cores as the server they measured (``bench/api_load.py`` prints the load generator's CPU per
ask+tell pair). A load generator should cost the system under test as little as it can, as wrk or k6
do; this one parses only what the benchmarks need: the status line, Content-Length and the body
(uvicorn sends Content-Length on every JSON response).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One persistent connection; requests on it run one at a time (as a client thread's would)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {self.host}:{self.port}\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        target = self.prefix + path + (f"?{urlencode(params)}" if params else "")
        body = b"" if json_body is None else json.dumps(json_body).encode()
        kind = "Content-Type: application/json\r\n" if json_body is not None else ""
        head = f"{method} {target} HTTP/1.1\r\n{self._head}{kind}Content-Length: {len(body)}\r\n\r\n"
        try:
            self._writer.write(head.encode() + body)
            status_line, _, headers = (await self._reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return Response(int(status_line.split()[1]), await self._reader.readexactly(length))
        except (OSError, asyncio.IncompleteReadError):
            await self.close()  # the next request reconnects
            raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = self._reader = None
