"""``config/instruments.yaml``: what each exchange handler subscribes to, validated strictly.

An unknown key, a missing field or a badly spelled symbol is an error that names the file, the line
and the key; a missing file is an error too. Nothing in here is guessed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from k2.errors import ConfigError

__all__ = ["EXCHANGES", "ExchangeConfig", "Instruments", "load_instruments", "topic_names"]

EXCHANGES = ("binance", "kraken", "coinbase")
Exchange = Literal["binance", "kraken", "coinbase"]

_SYMBOL_PATTERNS = {
    # Binance spells symbols upper case without separator; canonical needs base/quote, so say it.
    "binance": re.compile(r"^[A-Z0-9]{2,20}$"),
    # Kraken v2: BASE/QUOTE with ISO codes (BTC, not XBT); tokenized equities are mixed case.
    "kraken": re.compile(r"^[A-Za-z0-9.]{1,16}/[A-Z0-9]{2,10}$"),
    "coinbase": re.compile(r"^[A-Z0-9]{1,16}-[A-Z0-9]{2,10}$"),
}
_CANONICAL = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{2,10}$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Instrument(_Strict):
    """One subscription: the venue's symbol and the canonical ``BASE-QUOTE`` it maps to."""

    symbol: str
    canonical: str = Field(pattern=_CANONICAL.pattern)


class ExchangeConfig(_Strict):
    enabled: bool = True
    ws_url: str = Field(pattern=r"^wss?://")
    rest_url: str | None = Field(default=None, pattern=r"^https?://")
    channel: str
    partitions: Annotated[int, Field(ge=1, le=1024)]
    symbols: tuple[Instrument, ...] = Field(min_length=1)


class Instruments(_Strict):
    exchanges: dict[Exchange, ExchangeConfig]

    @model_validator(mode="after")
    def _symbols_match_venue(self) -> Instruments:
        for name, exchange in self.exchanges.items():
            for i, inst in enumerate(exchange.symbols):
                if not _SYMBOL_PATTERNS[name].match(inst.symbol):
                    raise _SymbolError(("exchanges", name, "symbols", i, "symbol"), inst.symbol, name)
        return self


class _SymbolError(ValueError):
    def __init__(self, loc: tuple[str | int, ...], symbol: str, exchange: str) -> None:
        super().__init__(f"{symbol!r} is not a {exchange} symbol")
        self.loc = loc


def topic_names(exchange: str) -> tuple[str, str, str]:
    """(normalized, raw frames, dead letters) topics of one exchange."""
    base = f"market.crypto.trades.{exchange}"
    return base, f"{base}.raw", f"{base}.dlq"


def _lines(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _lines(value, (*path, key.value), out)
            out[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _line_of(lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _normalize(data: Any) -> Any:
    """Allow the short form ``- BTCUSDT: BTC-USDT`` and ``- BTC-USD`` (canonical = symbol)."""
    if not isinstance(data, dict):
        return data
    for exchange in (data.get("exchanges") or {}).values():
        if isinstance(exchange, dict) and isinstance(exchange.get("symbols"), list):
            exchange["symbols"] = [_instrument(item) for item in exchange["symbols"]]
    return data


def _instrument(item: Any) -> Any:
    if isinstance(item, str):
        return {"symbol": item, "canonical": item.replace("/", "-").upper()}
    if isinstance(item, dict) and len(item) == 1 and "symbol" not in item:
        ((symbol, canonical),) = item.items()
        return {"symbol": str(symbol), "canonical": canonical}
    return item


def load_instruments(path: Path) -> Instruments:
    """Parse and validate ``path``; any problem raises ConfigError naming file, line and key."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: instruments file not found") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line}: not valid YAML: {exc}") from exc
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _lines(node, (), lines)
    try:
        return Instruments.model_validate(_normalize(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p != "[key]")
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, _SymbolError):
                loc = cause.loc
            key = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{path}:{_line_of(lines, loc)}: {key}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from exc
