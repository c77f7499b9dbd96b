"""A small HTTP proxy on 127.0.0.1 in front of moto's server that misbehaves on purpose.

Each request is forwarded unless a rule (or the seeded random fault rate) says otherwise:
`reset` closes the connection before forwarding, `500`/`503`/`403` answer with an S3-style
error (`403`: AccessDenied, a permission the role lacks),
`delay` waits before forwarding, `lost` forwards the request and then closes the connection
without answering (the write happened, the answer was lost), `cut` sends the answer's headers and
half its body. Nothing in boto3 is patched: the client sees what a flaky network would show it.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("reset", "500", "503", "delay", "lost", "cut")
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}

Rule = Callable[[str, str, dict[str, str]], str | None]


@dataclass
class FaultPlan:
    """Which requests fail: explicit rules first, then a seeded share of everything."""

    rate: float = 0.0
    seed: int = 0
    faults: tuple[str, ...] = ("reset", "500", "503", "delay")
    delay_s: float = 0.2
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def decide(self, method: str, path: str, headers: dict[str, str]) -> str:
        with self._lock:
            for rule in self.rules:
                if (action := rule(method, path, headers)) is not None:
                    self.seen.append((method, path, action))
                    return action
            action = "pass"
            if self.rate and self._random.random() < self.rate:
                action = self._random.choice(self.faults)
            self.seen.append((method, path, action))
            return action


def once(method: str, path_part: str, action: str, *, header: str | None = None) -> Rule:
    """A rule that fires on the first matching request only."""
    fired = {"done": False}

    def rule(m: str, path: str, headers: dict[str, str]) -> str | None:
        if fired["done"] or m != method or path_part not in path:
            return None
        if header is not None and header.lower() not in {k.lower() for k in headers}:
            return None
        fired["done"] = True
        return action

    return rule


def always_with_header(method: str, path_part: str, action: str, header: str) -> Rule:
    """Every matching request that carries `header` (e.g. an upload asking for a lock)."""

    def rule(m: str, path: str, headers: dict[str, str]) -> str | None:
        wanted = m == method and path_part in path
        return action if wanted and header.lower() in {k.lower() for k in headers} else None

    return rule


def always(method: str, path_part: str, action: str) -> Rule:
    def rule(m: str, path: str, headers: dict[str, str]) -> str | None:
        return action if m == method and path_part in path else None

    return rule


ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>injected</Message><RequestId>fault</RequestId></Error>"
)


class FaultProxy:
    """Start with `with FaultProxy(upstream, plan) as url:`; `url` is the endpoint to use."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        parts = urlsplit(upstream)
        self.host, self.port, self.plan = parts.hostname or "127.0.0.1", parts.port or 80, plan
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _error(self, code: int) -> None:
                name = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied"}[code]
                data = ERROR.format(code=name).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _any(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                action = proxy.plan.decide(self.command, self.path, headers)
                if action == "reset":
                    return self._drop()
                if action in ("500", "503", "403"):
                    return self._error(int(action))
                if action == "delay":
                    time.sleep(proxy.plan.delay_s)
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    out_headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP]
                    status = answer.status
                finally:
                    conn.close()
                if action == "lost":
                    return self._drop()
                self.send_response(status)
                for k, v in out_headers:
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if action == "cut" and self.command != "HEAD":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    return self._drop()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
