"""Shared helpers of the member unit tests."""
from __future__ import annotations

import asyncio


async def wait_until(pred, timeout_s=10.0):
    """Poll pred() every 10 ms on the running loop; fails the test after timeout_s."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
