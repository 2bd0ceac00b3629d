"""The messages the console's app receives: from the feed's threads (`FeedUpdate`,
`FeedStatus`) and from its dialogs (`LeaseChanged`). The screens and panes answer the app
with these, never by reaching into it, so they import nothing of `app.py`."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tms_console.fleet import Update
from tms_core.api import tms_pb2 as pb


@dataclass
class FeedUpdate(Message):
    """What the feed fetched or was told: the app applies it to its fleet."""

    update: Update


@dataclass
class FeedStatus(Message):
    """The feed's connection: `connecting`, `live` or `unreachable`, and what to say."""

    state: str
    message: str


@dataclass
class LeaseChanged(Message):
    """An action's answer about a lease: the app shows it at once, before the event stream
    says so."""

    lease: pb.Lease
