"""uvicorn's httptools protocol with bounds on the request head and on the time a client
takes to send its request.

httptools has no head-size bound, and uvicorn's --h11-max-incomplete-event-size applies to
h11 only: without this a client could send megabytes of header that the server buffers.
uvicorn has no request-read timeout either: a client trickling its head or body would hold a
connection (and a slot of --limit-concurrency) for as long as it likes. The Procfile runs the
receiver with `--http worker.receiver.limits:LimitedHttpToolsProtocol`.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config.settings import get_settings

MAX_HEAD_BYTES = 64 * 1024
# Where each request's scope carries the socket's peer (host, port): uvicorn's proxy-headers
# middleware rewrites scope["client"] from X-Forwarded-For, so "who is connected" is kept here.
PEER_KEY = "jira_sync.peer"


def _refusal(status: str, error: str, detail: str) -> bytes:
    body = json.dumps({"error": error, "detail": detail}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_LARGE = _refusal("431 Request Header Fields Too Large", "headers_too_large", "over 64 KiB")
TOO_SLOW = _refusal("408 Request Timeout", "request_timeout", "the request was not sent in time")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Refuses with 431 a request whose head passes MAX_HEAD_BYTES, and with 408 one not
    received within WEBHOOK_READ_TIMEOUT_S (seconds from connecting, or from the first byte of
    a later request, to the last byte of the request; a webhook is a few KiB and honest
    clients need far less); either way the connection is closed. Each request's scope holds
    the socket's peer under PEER_KEY."""

    _head_bytes = 0
    _in_head = True
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, so a chunk that completes the head (body included) is free.
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[PEER_KEY] = self.client  # type: ignore[literal-required]
        self._arm_read_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm_read_timer()
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def _arm_read_timer(self) -> None:
        self._disarm_read_timer()
        timeout_s = get_settings().webhook_read_timeout_s
        self._read_timer = self.loop.call_later(timeout_s, self._refuse, TOO_SLOW)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _refuse(self, answer: bytes) -> None:
        if self.transport.is_closing():
            return
        # An app that already began its answer (e.g. a 413) keeps it; only the socket goes.
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(answer)
        self.transport.close()
