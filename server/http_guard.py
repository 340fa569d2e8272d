"""uvicorn's httptools HTTP/1.1 protocol with the limits that protect the process.

uvicorn bounds none of these, so one client could otherwise hold the process:

- connections: past `max_connections` open ones, a new connection is answered
  503 and closed at once, before it can cost a parser or a timer;
- header bytes and lines: the request line and headers are counted as they are
  fed to the parser (a 64 MiB header took seconds of quadratic concatenation in
  it and stalled every other request), and past `max_header_bytes` or
  `max_headers` the request is answered 431 and the connection closed;
- header read time: a connection that has not finished its headers
  `header_timeout_s` after it opened (or after its request's first byte, on a
  kept-alive connection) is answered 408 and closed, or just closed when it sent
  nothing: a slowloris client that trickles header bytes is a deadline, not an
  inactivity timer, so trickling cannot extend it;
- body read time: a body not complete `body_timeout_s` after its headers is
  answered 408 and closed. The application then sees the client disconnect,
  with `BODY_TIMEOUT_KEY` set in its scope so that it counts a timeout, not a
  cancellation. A body still arriving after the answer was sent (the route
  answered without reading it) is cut off at the same deadline.

Refusals are written here, in the gateway's error form ({"error", "detail",
"field"}), because no application runs for a request that never completed its
headers. Warnings are rate-limited: a flood of refusals logs one line a period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from server.limits import LimitsConfig

log = logging.getLogger("mlws.server")
#: Scope key the protocol sets when it answered a request 408 for a slow body.
BODY_TIMEOUT_KEY = "mlws.body_timed_out"
#: Least time between two warnings of one kind; the ones in between are counted.
WARN_PERIOD_S = 10.0


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request being refused."""


class RateLimitedWarnings:
    """One warning line per kind per period, telling how many were held back."""

    def __init__(self, period_s: float = WARN_PERIOD_S) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        """Log `message` unless a `kind` warning was logged within the period."""
        now = time.monotonic()
        if now - self._last.get(kind, -self.period_s) < self.period_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        suffix = f" (and {held} more since the last such warning)" if held else ""
        log.warning("%s%s", message, suffix)


WARNINGS = RateLimitedWarnings()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol enforcing `limits` (a class attribute: see `guarded_protocol`)."""

    limits: ClassVar[LimitsConfig] = LimitsConfig()
    retry_after_s: ClassVar[int] = 1

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        #: Bytes after the last complete request and before its successor's headers end.
        self._head_open = True
        self._head_bytes = 0
        #: Bytes of the request line and headers the parser has handed over so far.
        self._head_size = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        #: (status, error code, detail, field) of the answer refusing this connection.
        self._refusal: tuple[int, str, str, str | None] | None = None

    # ------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limits.max_connections
        if len(self.connections) > limit:
            WARNINGS.warn("connections", f"refused a connection: {limit} are open (the limit)")
            detail = f"too many open connections (limit {limit}); retry later"
            self._answer(503, "unavailable", detail, None)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        if self._head_open:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
                return
        if self._refusal is None and self._head_open:
            # A head still incomplete after this read: the parser holds a part of it
            # that no callback has reported yet, so the bytes read are what count. It
            # may overrun the limit by one read (at most 256 KiB): bounded work.
            self._refuse_head_over(self._head_bytes)
        if self._refusal is not None:
            self._answer(*self._refusal)

    def _refuse_head_over(self, size: int) -> bool:
        """Refuse the request (431) if its head has `size` bytes, more than the limit."""
        limit = self.limits.max_header_bytes
        if size <= limit:
            return False
        WARNINGS.warn("header_bytes", f"refused a request: headers over {limit} bytes")
        detail = f"request line and headers exceed {limit} bytes"
        self._refusal = (431, "too_large", detail, "headers")
        return True

    # ------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._head_size = 0
        self._head_open = True
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._refuse_head_over(self._head_size):
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted as each header completes, so a whole head that arrived in one read
        # is refused before the application ever sees it.
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        limit = self.limits.max_headers
        if self._header_count > limit:
            WARNINGS.warn("header_count", f"refused a request: more than {limit} headers")
            self._refusal = (431, "too_large", f"more than {limit} header lines", "headers")
            raise _Refused
        if self._refuse_head_over(self._head_size):
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._head_open, self._head_bytes = False, 0
        super().on_headers_complete()
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        self._head_open, self._head_bytes = True, 0
        super().on_message_complete()

    # ------------------------------------------------------------ timers
    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request waits for the server's answer to the one before it:
            # the client is not the slow one.
            self._arm_head_timer()
            return
        seconds = self.limits.header_timeout_s
        if self._head_bytes == 0:
            self.transport.close()  # idle: it never started a request
            return
        WARNINGS.warn("header_timeout", f"refused a request: headers not received in {seconds:g} s")
        self._answer(408, "timeout", f"request headers not received within {seconds:g} s", None)

    def _body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is None or cycle.response_started:
            self.transport.close()  # answered already: stop reading a body nobody wants
            return
        seconds = self.limits.body_timeout_s
        if self.flow.read_paused or self.pipeline:
            # The server stopped reading (its application is behind, or this request
            # waits for the one before it): the client is not the slow one.
            self._body_timer = self.loop.call_later(seconds, self._body_timeout)
            return
        WARNINGS.warn("body_timeout", f"refused a request: body not received in {seconds:g} s")
        cycle.scope[BODY_TIMEOUT_KEY] = True  # type: ignore[literal-required]
        # The application waiting for the body sees the client gone, and its own
        # answer is dropped: this one is the request's only response.
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer(408, "timeout", f"request body not received within {seconds:g} s", "body")

    # ------------------------------------------------------------ answers
    def _answer(self, status: int, code: str, detail: str, field: str | None) -> None:
        """Write one JSON error answer and close the connection after it."""
        self._refusal = (status, code, detail, field)
        self._cancel_timers()
        body = json.dumps({"error": code, "detail": detail, "field": field}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if status == 503:
            head.append(b"retry-after: %d\r\n" % self.retry_after_s)
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()


def guarded_protocol(
    limits: LimitsConfig, retry_after_s: int = 1
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn builds one instance of per connection, with `limits`
    (and `retry_after_s` on its 503 answers)."""
    attributes = {"limits": limits, "retry_after_s": retry_after_s}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)
