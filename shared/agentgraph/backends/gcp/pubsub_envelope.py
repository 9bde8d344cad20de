"""The Pub/Sub push envelope (the body of a push request, which the functions read
directly: no CloudEvent conversion), unwrapped into the parts we use.

Kept beside the dispatcher that publishes the messages, out of the core: the core's
messages (`core/messages.py`) know nothing of how Pub/Sub carries them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentgraph.core.errors import MalformedMessage


@dataclass(frozen=True)
class PubSubMessage:
    """The parts of a Pub/Sub push message that the functions use."""

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    publish_time: float | None = None  # epoch seconds, when Pub/Sub accepted the message


def pubsub_message(event_data: Any) -> PubSubMessage:
    """Unwrap `message` of a push envelope `{"message": {...}, "subscription": ...}`."""
    if not isinstance(event_data, Mapping) or not isinstance(event_data.get("message"), Mapping):
        raise MalformedMessage(
            f"expected a Pub/Sub push envelope with a message, found {type(event_data).__name__}"
        )
    message = event_data["message"]
    message_id = str(message.get("messageId") or message.get("message_id") or "?")
    raw = message.get("data") or ""
    try:
        data = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError, TypeError) as exc:
        raise MalformedMessage(f"message {message_id}: data is not base64: {exc}") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        attributes = {}
    return PubSubMessage(
        message_id,
        data,
        {str(k): str(v) for k, v in attributes.items()},
        _epoch(message.get("publishTime") or message.get("publish_time")),
    )


def _epoch(value: Any) -> float | None:
    """An RFC 3339 publish time as epoch seconds; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
