"""Fixtures of the blocking-client tests: a native server over RichFakeService in a thread of
its own, and a Client on it (a module may define its own `server` instead)."""
from __future__ import annotations

import pytest

import raftkv
from tests.unit.client.richfake import RichFakeService, ServerThread


@pytest.fixture
def server():
    srv = ServerThread(RichFakeService())
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = raftkv.Client([server.endpoint], timeout=3.0)
    yield c
    c.close()
