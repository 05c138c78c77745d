"""One pure module per venue (no I/O, no clock): endpoint and limits as data, message builders, ``parse``.

A generic runner looks a venue up in ``VENUES`` and calls ``subscribe``/``unsubscribe``/``parse`` on it;
it never branches on the venue's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from feed_handlers.exchanges import binance, coinbase, kraken
from feed_handlers.exchanges._base import Kind, MessageBuilder, Parser, ParseResult, Venue

__all__ = ["VENUES", "Kind", "MessageBuilder", "ParseResult", "Parser", "Venue", "binance", "coinbase", "kraken"]

VENUES: Mapping[str, Venue] = MappingProxyType({v.name: v for v in (binance.VENUE, kraken.VENUE, coinbase.VENUE)})
