"""Fetching ``image_url`` uploads, locked down against SSRF.

Rules, each with the dead-letter ``error-type`` it produces:
- scheme http or https only; host on the allowlist (``*.example.com`` matches
  subdomains; an empty list denies everything)                      -> url_not_allowed
- every address the host resolves to must be public: not loopback, private, link-local,
  shared (CGNAT), reserved, multicast or a cloud metadata address, unless it lies in
  ``allowed_networks``; the connection goes to the checked address itself (no second DNS
  lookup to rebind) and the peer address is checked again once connected -> url_blocked_address
- redirects are followed only up to ``max_redirects``, each target checked the same way
                                                                     -> url_too_many_redirects
- status 200 only, ``Content-Type: image/*``                         -> url_fetch_failed,
                                                                        url_bad_content_type
- at most ``max_bytes`` read, within ``timeout_s`` for the whole fetch -> url_too_large,
                                                                        url_timeout
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from moderation.contract.errors import ModerationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# metadata endpoints that are not already non-global (169.254.169.254 is link-local,
# fd00:ec2::254 is unique-local, 100.100.100.200 is shared address space)
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
             ipaddress.ip_address("100.100.100.200")}


class FetchError(ModerationError):
    """An ``image_url`` that cannot or may not be fetched; ``reason`` is the error-type."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: Sequence[str] = ()
    allowed_networks: Sequence[str] = ()  # e.g. an internal CDN range; empty in production
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 5.0
    max_redirects: int = 3
    user_agent: str = "moderation-fetch/1"
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, default=())

    def __post_init__(self) -> None:
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        object.__setattr__(self, "_networks", nets)

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for pattern in self.allowed_hosts:
            p = pattern.lower().rstrip(".")
            if p.startswith("*.") and (host.endswith(p[1:]) and host != p[2:]):
                return True
            if host == p:
                return True
        return False

    def address_allowed(self, address: str) -> bool:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self._networks):
            return True
        return ip.is_global and not ip.is_multicast and ip not in _METADATA


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to one already-checked address; Host header and TLS name stay the host's."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


class Fetcher:
    def __init__(self, policy: FetchPolicy, resolver: Resolver = system_resolver,
                 tls: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.resolver = resolver
        self.tls = tls or ssl.create_default_context()

    def fetch(self, url: str) -> bytes:
        """The image bytes behind ``url``, or ``FetchError`` with a reason."""
        deadline = time.monotonic() + self.policy.timeout_s
        for _ in range(self.policy.max_redirects + 1):
            status, location, body = self._get_once(url, deadline)
            if status in (301, 302, 303, 307, 308):
                if not location:
                    raise FetchError("url_fetch_failed", f"redirect {status} without Location")
                url = urllib.parse.urljoin(url, location)
                continue
            assert body is not None
            return body
        raise FetchError("url_too_many_redirects",
                         f"more than {self.policy.max_redirects} redirects")

    def _target(self, url: str) -> tuple[str, str, int, str]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError("url_not_allowed", f"scheme {parts.scheme!r} is not http(s)")
        host = parts.hostname or ""
        if not host or not self.policy.host_allowed(host):
            raise FetchError("url_not_allowed", f"host {host!r} is not on the allowlist")
        if parts.username or parts.password:
            raise FetchError("url_not_allowed", "credentials in URLs are not allowed")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchError("url_not_allowed", f"bad port: {exc}") from exc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return parts.scheme, host, port, path

    def _address(self, host: str, port: int) -> str:
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise FetchError("url_fetch_failed", f"cannot resolve {host!r}: {exc}") from exc
        blocked = [a for a in addresses if not self.policy.address_allowed(a)]
        if blocked or not addresses:  # one bad answer taints the name (rebinding games)
            raise FetchError("url_blocked_address",
                             f"{host!r} resolves to a non-public address {blocked or addresses}")
        return addresses[0]

    def _get_once(self, url: str, deadline: float) -> tuple[int, str | None, bytes | None]:
        scheme, host, port, path = self._target(url)
        address = self._address(host, port)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("url_timeout", f"fetch took over {self.policy.timeout_s} s")
        conn: http.client.HTTPConnection = (
            _PinnedHTTPS(host, port, address, remaining, self.tls) if scheme == "https"
            else _PinnedHTTP(host, port, address, remaining))
        try:
            conn.connect()
            assert conn.sock is not None
            peer = conn.sock.getpeername()[0]
            if not self.policy.address_allowed(peer):
                raise FetchError("url_blocked_address", f"connected to non-public {peer}")
            conn.request("GET", path, headers={"User-Agent": self.policy.user_agent,
                                               "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                return resp.status, resp.getheader("Location"), None
            if resp.status != 200:
                raise FetchError("url_fetch_failed", f"HTTP {resp.status} from {host}")
            ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if not ctype.startswith("image/"):
                raise FetchError("url_bad_content_type",
                                 f"Content-Type {ctype or 'missing'!r} is not image/*")
            declared = resp.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                raise FetchError("url_too_large", f"Content-Length {declared} over "
                                 f"{self.policy.max_bytes}")
            return 200, None, self._read(resp, deadline)
        except FetchError:
            raise
        except TimeoutError as exc:
            raise FetchError("url_timeout", f"fetch took over {self.policy.timeout_s} s") from exc
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise FetchError("url_fetch_failed", f"{host}: {exc}") from exc
        finally:
            conn.close()

    def _read(self, resp: http.client.HTTPResponse, deadline: float) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            if time.monotonic() > deadline:
                raise FetchError("url_timeout", f"fetch took over {self.policy.timeout_s} s")
            chunk = resp.read(65536)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > self.policy.max_bytes:
                raise FetchError("url_too_large", f"body over {self.policy.max_bytes} bytes")
            chunks.append(chunk)
