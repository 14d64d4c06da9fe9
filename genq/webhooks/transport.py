"""An HTTP session that connects only to addresses the webhook URL rules allow, checked at connect time.

Checking a URL's host when the job is submitted is not enough: its DNS answer can change before the
delivery (DNS rebinding), and a second lookup inside the HTTP library could differ from the one
checked. So the connection itself resolves the host, refuses it if any address is forbidden
(`urls.check_resolved`), and connects to exactly the checked addresses. TLS still uses the URL's host
name for SNI and certificate verification, since only the socket's destination is pinned.
"""
from __future__ import annotations

import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from genq.webhooks.urls import AllowList, check_resolved


def guarded_session(allow: AllowList) -> requests.Session:
    """A requests session whose every connection is checked against `allow` (see module docstring).

    It ignores the environment (no proxies, which would hide the real destination; no .netrc
    credentials). Redirects are the caller's to refuse: pass allow_redirects=False.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(allow)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _GuardedConnectionMixin:
    """Replaces urllib3's `_new_conn`: resolve, check every address, connect to a checked one."""

    webhook_allow: AllowList
    host: str
    port: int
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        try:
            addresses = check_resolved(name, self.port, self.webhook_allow)  # WebhookURLError propagates
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e  # type: ignore[arg-type]
        last_error: Exception | None = None
        for address in addresses:
            # urllib3 connects to `_dns_host`; pointing it at the checked literal means no second lookup.
            self._dns_host = str(address)
            try:
                return super()._new_conn()  # type: ignore[misc]
            except (NewConnectionError, ConnectTimeoutError) as e:
                last_error = e
            finally:
                self._dns_host = name
        raise last_error or NewConnectionError(self, f"{name!r} resolved to no address")  # type: ignore[arg-type]


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allow: AllowList):
        self._webhook_allow = allow
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        attrs = {"webhook_allow": self._webhook_allow}
        http_conn = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), attrs)
        https_conn = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), attrs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }
