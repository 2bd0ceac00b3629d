"""What every `tms` subcommand shares: the client context and one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from rich.markup import escape

from tms_core.api.client import ClientError, TmsClient
from tms_core.cli import output
from tms_core.errors import TmsError

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ClientError, TmsError, ValueError) as exc:
            output.err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


class Context:
    def __init__(self, target: str) -> None:
        self.target = target
        self._client: TmsClient | None = None

    @property
    def client(self) -> TmsClient:
        if self._client is None:
            self._client = TmsClient(self.target)
        return self._client


pass_context = click.make_pass_decorator(Context)
