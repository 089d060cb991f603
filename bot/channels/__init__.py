"""Where posts go. Each channel type is one module with one `Channel` subclass, named here.

Entries are "module:Class" strings so that a channel's library (Mastodon.py, tweepy) is only
imported when that channel is configured.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.channels.base import Channel, ChannelSettings

REGISTRY: dict[str, str] = {
    "outbox": "bot.channels.outbox:OutboxChannel",
    "mastodon": "bot.channels.mastodon:MastodonChannel",
    "twitter": "bot.channels.twitter:TwitterChannel",
}


def channel_class(type_name: str) -> type[Channel]:
    try:
        target = REGISTRY[type_name]
    except KeyError:
        raise ValueError(f"unknown channel type '{type_name}' "
                         f"(known: {', '.join(sorted(REGISTRY))})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def build_channels(channels: dict[str, ChannelSettings], data_dir: Path) -> dict[str, Channel]:
    """The enabled channels, by their name in the config."""
    return {name: channel_class(cs.type)(name, cs, data_dir)
            for name, cs in channels.items() if cs.enabled}
