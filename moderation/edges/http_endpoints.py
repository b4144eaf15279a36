"""The worker's HTTP side: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness).

Liveness only says the process serves requests and its main loop has turned recently;
readiness says it can decide uploads now (broker reachable, Triton model ready, policy set
loaded) and lists each check, so a failing probe says which dependency is missing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Checks = Callable[[], Mapping[str, bool]]


class HealthServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Checks,
                 live: Callable[[], bool]) -> None:
        registry_, ready_, live_ = registry, ready, live

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = live_()
                    self._json(200 if ok else 503, {"status": "ok" if ok else "stalled"})
                elif self.path == "/readyz":
                    checks = dict(ready_())
                    ok = all(checks.values())
                    self._json(200 if ok else 503,
                               {"status": "ready" if ok else "not ready", "checks": checks})
                else:
                    self._json(404, {"error": "not found"})

            def _json(self, code: int, body: dict[str, Any]) -> None:
                self._send(code, json.dumps(body).encode(), "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the worker's log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("serving /metrics /healthz /readyz on port=%d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
