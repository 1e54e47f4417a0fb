"""uvicorn's httptools protocol with a bound on the request line and headers.

httptools has no such bound, and uvicorn's --h11-max-incomplete-event-size applies to h11
only: without this a client could send megabytes of header that the server buffers. The
Procfile runs the receiver with `--http worker.http_limits:LimitedHttpToolsProtocol`.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: 52\r\nconnection: close\r\n\r\n"
    b'{"error":"headers_too_large","detail":"over 64 KiB"}'
)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Refuses with 431, and closes, a request whose head passes MAX_HEAD_BYTES."""

    _head_bytes = 0
    _in_head = True

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, so a chunk that completes the head (body included) is free.
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(REFUSAL)
                self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0
