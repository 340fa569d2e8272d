"""Work that is cheap inline when small and must leave the event loop when big."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def off_loop_if(big: bool, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, on a worker thread when `big`.

    Parsing or encoding tens of MB takes tens of milliseconds, which must not
    stall the event loop; small payloads are cheaper inline than a thread hop.
    """
    if big:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)
