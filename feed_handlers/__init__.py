"""Exchange WebSocket feed handlers: venue parsers, the generic runner, publishing, state."""

__all__: list[str] = []
