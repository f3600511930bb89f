"""A small HTTP proxy in front of a real S3 server, for faults the server cannot make itself.

Requests pass through unchanged (signatures stay valid: nothing signed is touched) unless
the test asks for a fault:

- ``hold(pattern)`` / ``release()``: requests whose ``METHOD /key`` matches wait until
  released (a stuck upload; ``release(drop=True)`` never forwards them),
  ``delay(pattern, seconds)`` slows them down;
- ``down = True``: every request is answered ``503 ServiceUnavailable`` (an outage);
- ``clock_shift_s``: ``Date`` and ``Last-Modified`` of every answer are shifted, as a
  server whose clock disagrees with the client's by that much;
- ``ignore_if_none_match = True``: a ``PUT`` with ``If-None-Match: *`` over an existing
  object is written anyway (older or partial S3 implementations do that); the proxy
  writes it with its own credentials, since the client's signature covers the header.

``seen`` lists ``METHOD /bucket/key`` of every request, in order.

    with S3Proxy(endpoint) as proxy:   # proxy.endpoint: "http://127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import email.utils
import http.client
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "expect"}


class S3Proxy:
    def __init__(self, upstream: str, admin: Callable[[], Any] | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        #: A boto3 client for writes the proxy makes itself (ignore_if_none_match).
        self._admin = admin
        self.down = False
        self.clock_shift_s = 0.0
        self.ignore_if_none_match = False
        self.seen: list[str] = []
        self._rules: list[tuple[re.Pattern[str], float | None]] = []
        self._released = threading.Event()
        self._drop = False
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="s3proxy")

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    # -- faults ---------------------------------------------------------------------------

    def hold(self, pattern: str) -> None:
        """Requests matching ``pattern`` (a regex over ``METHOD /bucket/key``) wait."""
        self._released.clear()
        with self._lock:
            self._rules.append((re.compile(pattern), None))

    def delay(self, pattern: str, seconds: float) -> None:
        with self._lock:
            self._rules.append((re.compile(pattern), seconds))

    def release(self, *, drop: bool = False) -> None:
        """Let held requests go, and hold nothing more; ``drop``: the held requests are
        never forwarded, their connections closed (what a client killed meanwhile leaves)."""
        with self._lock:
            self._rules = [(p, s) for p, s in self._rules if s is not None]
            self._drop = drop
        self._released.set()

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._lock:
            return sum(1 for line in self.seen if regex.search(line))

    # -- plumbing -------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0]
        line = f"{handler.command} {path}"
        with self._lock:
            self.seen.append(line)
            rules = list(self._rules)
        for pattern, seconds in rules:
            if pattern.search(line):
                if seconds is None:
                    self._released.wait()
                    if self._drop:
                        handler.close_connection = True
                        return
                else:
                    time.sleep(seconds)
        if self.down:
            self._reply(handler, 503, {"Content-Type": "application/xml"},
                        b"<Error><Code>ServiceUnavailable</Code></Error>")
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        status, reply_headers, data = self._forward(handler.command, handler.path, headers, body)
        if (status == 412 and self.ignore_if_none_match and handler.command == "PUT"
                and handler.headers.get("If-None-Match") == "*" and self._admin is not None):
            bucket, _, key = path.lstrip("/").partition("/")
            self._admin().put_object(Bucket=bucket, Key=key, Body=body)
            self._reply(handler, 200, {"ETag": '"ignored-if-none-match"'}, b"")
            return
        self._reply(handler, status, reply_headers, data, head=handler.command == "HEAD")

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(method, path, body=body if body or method in ("PUT", "POST") else None,
                         headers=headers)
            response = conn.getresponse()
            data = response.read()
            reply = {k: v for k, v in response.getheaders() if k.lower() not in _HOP}
            return response.status, reply, data
        finally:
            conn.close()

    def _shifted(self, value: str) -> str:
        parsed = email.utils.parsedate_to_datetime(value)
        return email.utils.format_datetime(
            parsed.fromtimestamp(parsed.timestamp() + self.clock_shift_s, parsed.tzinfo),
            usegmt=True)

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
               data: bytes, head: bool = False) -> None:
        handler.send_response_only(status)
        length_sent = False
        for name, value in headers.items():
            if self.clock_shift_s and name.lower() in ("date", "last-modified"):
                value = self._shifted(value)
            if name.lower() == "content-length":
                length_sent = True
                if not head:
                    value = str(len(data))
            handler.send_header(name, value)
        if not length_sent:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if not head and data:
            handler.wfile.write(data)
