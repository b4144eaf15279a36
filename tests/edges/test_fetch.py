"""image_url fetching against local HTTP servers: allowlist, address checks, redirects,
limits. Servers bind 127.0.0.2 (allowed through ``allowed_networks``, standing in for a
public host) and 127.0.0.1 (standing in for an internal service)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest

from moderation.edges.fetch import Fetcher, FetchError, FetchPolicy
from tests.fakes import RED

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Server:
    def __init__(self, host: str) -> None:
        routes: dict[str, Handler] = {}
        self.routes = routes

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), H)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


def body(data: bytes, ctype: str = "image/png", length: bool = True) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        if length:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return handle


def redirect(to: str) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", to)
        h.end_headers()
    return handle


@pytest.fixture(scope="module")
def public() -> Iterator[Server]:
    s = Server("127.0.0.2")
    yield s
    s.httpd.shutdown()


@pytest.fixture(scope="module")
def internal() -> Iterator[Server]:
    s = Server("127.0.0.1")
    s.routes["/secret.png"] = body(RED)
    yield s
    s.httpd.shutdown()


def fetcher(**kw: object) -> Fetcher:
    args: dict[str, object] = {"allowed_hosts": ("127.0.0.2", "127.0.0.1", "localhost"),
                               "allowed_networks": ("127.0.0.2/32",), "timeout_s": 2.0, **kw}
    return Fetcher(FetchPolicy(**args))  # type: ignore[arg-type]


def reason(f: Fetcher, url: str) -> str:
    with pytest.raises(FetchError) as exc:
        f.fetch(url)
    return exc.value.reason


def test_an_allowed_public_image_is_fetched(public: Server) -> None:
    public.routes["/ok.png"] = body(RED)
    assert fetcher().fetch(public.url("/ok.png")) == RED


def test_empty_allowlist_denies_everything(public: Server) -> None:
    public.routes["/ok.png"] = body(RED)
    assert reason(Fetcher(FetchPolicy()), public.url("/ok.png")) == "url_not_allowed"


@pytest.mark.parametrize("url", ["ftp://127.0.0.2/a.png", "file:///etc/passwd",
                                 "gopher://127.0.0.2/", "http://evil.example/a.png",
                                 "http://user:pw@127.0.0.2/a.png", "http:///nohost"])
def test_only_http_and_https_to_allowlisted_hosts(url: str) -> None:
    assert reason(fetcher(), url) == "url_not_allowed"


def test_loopback_is_blocked_even_when_the_host_is_allowlisted(internal: Server) -> None:
    assert reason(fetcher(), internal.url("/secret.png")) == "url_blocked_address"


def test_a_redirect_to_loopback_is_blocked(public: Server, internal: Server) -> None:
    public.routes["/hop.png"] = redirect(internal.url("/secret.png"))
    assert reason(fetcher(), public.url("/hop.png")) == "url_blocked_address"


def test_a_dns_name_resolving_to_a_private_address_is_blocked(internal: Server) -> None:
    private = Fetcher(FetchPolicy(allowed_hosts=("images.example.com",)),
                      resolver=lambda host, port: ["10.20.30.40"])
    assert reason(private, "https://images.example.com/a.png") == "url_blocked_address"
    # and the real resolver: localhost is allowlisted above but resolves to loopback
    assert reason(fetcher(), f"http://localhost:{internal.port}/secret.png") == \
        "url_blocked_address"


def test_one_private_answer_taints_the_name() -> None:
    mixed = Fetcher(FetchPolicy(allowed_hosts=("cdn.example.com",)),
                    resolver=lambda host, port: ["93.184.216.34", "192.168.1.10"])
    assert reason(mixed, "http://cdn.example.com/a.png") == "url_blocked_address"


@pytest.mark.parametrize("address,allowed", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("::1", False), ("10.0.0.1", False), ("172.16.5.5", False),
    ("192.168.0.1", False), ("169.254.169.254", False), ("fd00:ec2::254", False),
    ("100.100.100.200", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("ff02::1", False), ("fe80::1%eth0", False),
    ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True), ("240.0.0.1", False),
])
def test_public_address_rule(address: str, allowed: bool) -> None:
    assert FetchPolicy().address_allowed(address) is allowed


def test_allowlist_patterns() -> None:
    p = FetchPolicy(allowed_hosts=("*.cdn.example.com", "img.example.org"))
    assert p.host_allowed("a.cdn.example.com") and p.host_allowed("x.y.cdn.example.com")
    assert p.host_allowed("IMG.example.org.")
    assert not p.host_allowed("cdn.example.com")  # the wildcard means subdomains only
    assert not p.host_allowed("evilcdn.example.com") and not p.host_allowed("example.org")


def test_redirects_are_limited(public: Server) -> None:
    public.routes["/loop"] = redirect("/loop")
    assert reason(fetcher(max_redirects=2), public.url("/loop")) == "url_too_many_redirects"
    public.routes["/one"] = redirect("/final.png")
    public.routes["/final.png"] = body(RED)
    assert fetcher(max_redirects=1).fetch(public.url("/one")) == RED


def test_content_type_status_and_size_limits(public: Server) -> None:
    public.routes["/page"] = body(b"<html></html>", "text/html")
    assert reason(fetcher(), public.url("/page")) == "url_bad_content_type"
    assert reason(fetcher(), public.url("/missing")) == "url_fetch_failed"
    public.routes["/big.png"] = body(b"\x00" * 5000)
    assert reason(fetcher(max_bytes=4096), public.url("/big.png")) == "url_too_large"
    public.routes["/stream.png"] = body(b"\x00" * 200_000, length=False)
    assert reason(fetcher(max_bytes=100_000), public.url("/stream.png")) == "url_too_large"


def test_a_stalled_server_times_out(public: Server) -> None:
    release = threading.Event()

    def stall(h: http.server.BaseHTTPRequestHandler) -> None:
        release.wait(10)  # holds the response until the test is over

    public.routes["/stall.png"] = stall
    try:
        assert reason(fetcher(timeout_s=0.5), public.url("/stall.png")) == "url_timeout"
    finally:
        release.set()
