"""The group-commit loop of LKPS's batched writers (the audit log):
requests queue their items, and one task takes whatever has queued since its last
commit, up to a bound, and commits it as one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def commit_in_batches(
    queue: asyncio.Queue[T | None],
    commit: Callable[[list[T]], Awaitable[None]],
    *,
    max_batch: int,
) -> None:
    """Commit what `queue` holds, batch by batch, until it yields `None` (stop): the
    items queued before the `None` are committed first. `commit` must not raise (a
    writer that died would leave every later request waiting)."""
    stopping = False
    while not stopping:
        first = await queue.get()
        if first is None:
            break
        batch = [first]
        while len(batch) < max_batch and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                stopping = True
                break
            batch.append(item)
        await commit(batch)
