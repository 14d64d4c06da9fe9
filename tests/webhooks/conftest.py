"""Fixtures for the webhook tests: a live receiver, the test allow-list, a port nobody listens on."""
from __future__ import annotations

import socket

import pytest

from genq.webhooks.urls import AllowList

from .receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def allow_local() -> AllowList:
    """What the test configuration allows: the loopback receiver by address."""
    return AllowList.from_config("127.0.0.1")


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
