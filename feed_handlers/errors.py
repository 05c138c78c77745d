"""Errors of the feed_handlers package, each saying whether retrying can help.

K2Error (k2.errors)
└── FeedError              base of every error a feed handler raises on purpose
    └── ParseError         one frame is not what the venue protocol says (not retriable: dead-letter the
                           raw bytes, count it, keep the connection)
"""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["FeedError", "ParseError"]


class FeedError(K2Error):
    """Base of the feed handlers' errors."""


class ParseError(FeedError):
    """A frame could not be turned into a parse result; ``reason`` says why, in a few words.

    Parsers raise nothing else for any input, so a caller can send the raw frame to the dead-letter
    topic with ``reason`` and move on. Retrying the same bytes cannot help.
    """

    retriable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
