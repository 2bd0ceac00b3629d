"""Named, guarded asyncio tasks: a loop that dies says so in the log instead of vanishing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def create_guarded_task(
    coro: Coroutine[Any, Any, None], *, name: str, logger: logging.Logger = log
) -> asyncio.Task[None]:
    async def guard() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            logger.debug("task %s cancelled", name)
            raise
        except Exception:
            logger.exception("task %s failed", name)
            raise
        else:
            logger.debug("task %s finished", name)

    return asyncio.create_task(guard(), name=name)


async def stop_tasks(tasks: list[asyncio.Task[None]], *, grace: float = 5.0) -> None:
    """Cancels `tasks` and waits up to `grace` seconds for them to finish their cleanup."""
    for task in tasks:
        task.cancel()
    if tasks:
        _, hung = await asyncio.wait(tasks, timeout=grace)
        for task in hung:
            log.warning("task %s did not stop within %.1fs", task.get_name(), grace)
