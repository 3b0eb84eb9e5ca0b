"""Connection-level limits of the HTTP server: a deadline for a request's line and headers, and the
keep-alive timeout.

uvicorn (which BentoML runs) has a keep-alive timeout but no header timeout: a client that opens a
connection and trickles the request line and headers a byte at a time (slowloris) holds the connection
for as long as it likes. ``HeaderTimeoutProtocol`` is uvicorn's own HTTP protocol with one timer more:
it starts when a connection is made, and on a kept-alive connection when the next request's first byte
arrives, and stops when the headers are complete. When it fires, the connection gets the documented
408 error (``Connection: close``) if part of a request had arrived, and is closed. Such connections
never reach the ASGI app, so they never hold one of the API's request slots (``service.http_app``);
the body has its own deadline there (``SURROGATE_BODY_TIMEOUT_S``).

BentoML builds ``uvicorn.Config`` itself without an ``http`` argument, so the protocol is installed by
pointing uvicorn's ``"auto"`` entry at it (``install``), from ``service.service`` before the server
starts; tests/test_service_hardening.py checks on a real server that it takes effect.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn.config
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from service.request_parsing import error_response

PROTOCOL_PATH = f"{__name__}:HeaderTimeoutProtocol"


def _timeout_answer(header_timeout_s: float) -> bytes:
    """The raw 408 (the ASGI app never saw the request, so it is written to the socket directly)."""
    response = error_response(
        408,
        f"the request line and headers did not arrive within {header_timeout_s:g} s",
        headers={"Connection": "close", "X-Content-Type-Options": "nosniff"},
    )
    head = b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in response.raw_headers
    )
    return head + b"\r\n" + bytes(response.body)


class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type] - h11 or httptools
    """uvicorn's HTTP/1.1 protocol (h11, or httptools where installed) with a header deadline.

    The class attributes are set by ``install`` (one value per server process).
    """

    header_timeout_s: float = 10.0
    keep_alive_s: float | None = None  # None: uvicorn's (BentoML's --timeout-keep-alive, 5 s)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._answer_timeout = False
        if self.keep_alive_s is not None:
            self.timeout_keep_alive = self.keep_alive_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._start_header_timer()  # the next request on a kept-alive connection
        self._answer_timeout = True  # part of a request has arrived
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request's headers were complete: the app has it now
            self._stop_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._answer_timeout = False
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        # A connection that sent nothing (an idle pre-connect) is closed without an answer, as
        # uvicorn's keep-alive timeout does; one that sent part of a request learns why.
        if self._answer_timeout:
            self.transport.write(_timeout_answer(self.header_timeout_s))
        self.transport.close()


def install(header_timeout_s: float, keep_alive_s: float | None = None) -> None:
    """Make every uvicorn server of this process that uses the ``"auto"`` HTTP protocol (BentoML's
    do) use ``HeaderTimeoutProtocol`` with these timeouts."""
    HeaderTimeoutProtocol.header_timeout_s = header_timeout_s
    HeaderTimeoutProtocol.keep_alive_s = keep_alive_s
    uvicorn.config.HTTP_PROTOCOLS["auto"] = PROTOCOL_PATH
