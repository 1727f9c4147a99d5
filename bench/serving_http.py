"""A minimal asyncio HTTP/1.1 client for the serving benchmark's load generators.

Both load generators (open loop and closed loop) send pre-serialized ``POST`` bodies to
one server over keep-alive connections. A general client (httpx) costs a few hundred
microseconds of Python per request; on the load generator's single pinned core that
would cap the offered rate and blur the latency it measures. This client does only what
the benchmark needs: the request is built once as bytes, the response's status line and
``Content-Length`` (or chunked encoding) are parsed, and the body is returned as bytes.

:class:`ConnectionPool` keeps up to ``size`` connections; a request waits (first come,
first served) for a free one when all are busy, and that wait is part of its measured
latency. A connection that failed is closed and replaced on the next request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Largest response head (status line and headers) accepted.
MAX_HEAD = 64 * 1024


class HttpError(Exception):
    """The server's reply could not be read (closed, malformed, timed out)."""


@dataclass(frozen=True)
class Reply:
    """One response: status code and body."""

    status: int
    body: bytes


def request_bytes(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The complete ``POST`` request for ``url`` with ``body`` (keep-alive)."""
    parts = urlsplit(url)
    path = parts.path or "/"
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Connection: keep-alive",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection (used by one request at a time)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wrap an open stream pair."""
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> Reply:
        """Send ``request``, read one response.

        Raises:
            HttpError: The connection closed or the response was malformed.
        """
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            raise HttpError(f"no response head: {type(error).__name__}") from error
        lines = head[:-4].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError) as error:
            raise HttpError(f"bad status line {lines[0][:80]!r}") from error
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        try:
            if chunked:
                body = await self._chunked()
            elif length is not None:
                body = await self.reader.readexactly(length)
            else:
                raise HttpError("response without Content-Length or chunked encoding")
        except asyncio.IncompleteReadError as error:
            raise HttpError("connection closed mid-body") from error
        return Reply(status, body)

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers are sent by uvicorn
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        """Close the socket (no wait)."""
        self.writer.close()


class ConnectionPool:
    """Up to ``size`` keep-alive connections to one ``host:port``."""

    def __init__(self, url: str, size: int, timeout_s: float) -> None:
        """Connections are opened on demand, up to ``size``."""
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"URL needs host and port: {url}")
        self.host, self.port = parts.hostname, parts.port
        self.size = size
        self.timeout_s = timeout_s
        self._idle: deque[Connection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()

    async def _acquire(self) -> Connection | None:
        """An idle connection, or ``None`` meaning: open a new one (a slot is reserved)."""
        if self._idle:
            return self._idle.popleft()
        if self._open < self.size:
            self._open += 1
            return None
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def _release(self, connection: Connection | None) -> None:
        """Hand ``connection`` (``None``: its slot, after a failure) to the next waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if connection is None:
            self._open -= 1
        else:
            self._idle.append(connection)

    async def post(self, request: bytes) -> Reply:
        """Send one pre-built request; its reply.

        Raises:
            HttpError: Connecting, sending or reading failed, or ``timeout_s`` passed.
        """
        connection = await self._acquire()
        try:
            if connection is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=MAX_HEAD),
                    self.timeout_s,
                )
                connection = Connection(reader, writer)
            reply = await asyncio.wait_for(connection.exchange(request), self.timeout_s)
        except (OSError, TimeoutError, HttpError, ValueError) as error:
            if connection is not None:
                connection.close()
            self._release(None)
            if isinstance(error, HttpError):
                raise
            raise HttpError(type(error).__name__) from error
        self._release(connection)
        return reply

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.popleft().close()
