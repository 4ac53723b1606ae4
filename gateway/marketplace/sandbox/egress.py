"""The egress proxy: the only way out of a plugin worker (which cannot open a socket).

A worker asks `egress {method, url, headers, body, timeout_s}`; the proxy answers only when
the plugin's manifest grants the URL's host (`network:egress:<host>`, or `<host>:<port>` for a
port other than the scheme's), the scheme is http or https, and every address the host
resolves to is public (loopback, private, link-local and reserved ranges are refused unless
`allow_private`, for tests). Redirects are not followed (a redirect to an ungranted host would
be a way around the list); bodies are capped both ways.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests

from plugins.sdk import EgressRefused

MAX_REQUEST_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 4 << 20
MAX_TIMEOUT_S = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


class EgressProxy:
    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or netrc from the gateway's environment

    def request(self, capabilities: Iterable[str], args: dict[str, Any]) -> dict[str, Any]:
        method = str(args.get("method", "GET")).upper()
        url = str(args.get("url", ""))
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise EgressRefused(f"only http and https URLs with a host: {url[:200]!r}")
        host = parts.hostname.lower()
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        granted = {c.removeprefix("network:egress:") for c in capabilities if c.startswith("network:egress:")}
        wanted = host if port == _DEFAULT_PORTS[parts.scheme] else f"{host}:{port}"
        if wanted not in granted and f"{host}:{port}" not in granted:
            raise EgressRefused(f"the manifest does not grant network:egress:{wanted}")
        self._check_addresses(host, port)
        body = args.get("body")
        if body is not None and (not isinstance(body, bytes) or len(body) > MAX_REQUEST_BYTES):
            raise EgressRefused(f"a request body is bytes of at most {MAX_REQUEST_BYTES}")
        headers = {str(k): str(v) for k, v in dict(args.get("headers") or {}).items()}
        timeout = min(MAX_TIMEOUT_S, max(0.1, float(args.get("timeout_s", 10.0))))
        with self._session.request(method, url, headers=headers, data=body, timeout=timeout,
                                   allow_redirects=False, stream=True) as response:
            content = bytearray()
            for chunk in response.iter_content(64 << 10):
                content += chunk
                if len(content) > MAX_RESPONSE_BYTES:
                    raise EgressRefused(f"the response is over {MAX_RESPONSE_BYTES} bytes")
            return {"status": response.status_code, "headers": dict(response.headers), "body": bytes(content)}

    def _check_addresses(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise EgressRefused(f"{host} does not resolve: {exc}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not self.allow_private and not address.is_global:
                raise EgressRefused(f"{host} resolves to a non-public address ({address})")
