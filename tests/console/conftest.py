"""Helpers for the console's tests: Pilot waits that poll the app, not the clock."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static


async def until(
    pilot: Pilot[None], predicate: Callable[[], bool], *, within: float, what: str
) -> None:
    """Lets the app run until `predicate` holds; fails naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await pilot.pause(0.05)


def text_of(widget: Static) -> str:
    """What a Static (or Label) shows, as plain text."""
    content = widget.content
    if isinstance(content, str):
        return content
    if isinstance(content, Text):
        return content.plain
    return render_text(content)


def render_text(renderable: object) -> str:
    """A Rich renderable as the plain text a 200-column terminal would show."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()
