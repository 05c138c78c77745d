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
from yaml.constructor import ConstructorError

from feed_handlers.exchanges import VENUES
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
    enabled: bool = True  # false: its handler runs subscribed to nothing (and picks the symbols up when set back)
    ws_url: str = Field(pattern=r"^wss?://")
    rest_url: str | None = Field(default=None, pattern=r"^https?://")
    channel: str
    partitions: Annotated[int, Field(ge=1, le=1024)]
    symbols: tuple[Instrument, ...] = Field(min_length=1)


class Instruments(_Strict):
    exchanges: dict[Exchange, ExchangeConfig]

    @model_validator(mode="after")
    def _fits_the_venue(self) -> Instruments:
        """Channels the venue streams trades on; symbols spelled as the venue spells them, each once, and
        each canonical symbol once (two venue symbols under one canonical would merge their trades)."""
        for name, exchange in self.exchanges.items():
            channels = " | ".join(VENUES[name].trade_channels)
            if exchange.channel not in VENUES[name].trade_channels:
                message = f"{exchange.channel!r} is not a {name} trade channel ({channels})"
                raise _LocatedError(("exchanges", name, "channel"), message)
            first_of: dict[str, int] = {}  # symbol or canonical -> the item that has it
            for i, inst in enumerate(exchange.symbols):
                loc = ("exchanges", name, "symbols", i)
                if not _SYMBOL_PATTERNS[name].fullmatch(inst.symbol):  # match: "$" lets "BTCUSDT\n" through
                    raise _LocatedError((*loc, "symbol"), f"{inst.symbol!r} is not a {name} symbol")
                if (j := first_of.get("symbol " + inst.symbol)) is not None:
                    raise _LocatedError((*loc, "symbol"), f"{inst.symbol!r} is listed twice (item {j})")
                if (j := first_of.get("canonical " + inst.canonical)) is not None:
                    raise _LocatedError((*loc, "canonical"), f"{inst.canonical!r} is already the canonical of item {j}")
                first_of["symbol " + inst.symbol] = first_of["canonical " + inst.canonical] = i
        return self


class _LocatedError(ValueError):
    """A problem found by a model validator, at the path of the key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def topic_names(exchange: str) -> tuple[str, str, str]:
    """(normalized, raw frames, dead letters) topics of one exchange."""
    base = f"market.crypto.trades.{exchange}"
    return base, f"{base}.raw", f"{base}.dlq"


def _lines(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int], seen: set[int]) -> None:
    out[path] = node.start_mark.line + 1
    # An alias is the node it names: walk each node once, or "&a [*a]" recurses for ever and a few lines
    # of aliases of aliases ("billion laughs") take hours. A path below an alias falls back to the line of
    # the key holding it (for a list item, the anchor's line: PyYAML keeps no position for an alias).
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _lines(value, (*path, key.value), out, seen)
            out[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out, seen)


def _line_of(lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _normalize(data: Any) -> Any:
    """Allow the short form ``- BTCUSDT: BTC-USDT`` and ``- BTC-USD`` (canonical = symbol)."""
    exchanges = data.get("exchanges") if isinstance(data, dict) else None
    if not isinstance(exchanges, dict):  # validation says what is wrong with it
        return data
    for exchange in exchanges.values():
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


class _Loader(yaml.SafeLoader):
    """SafeLoader whose every failure is a YAMLError with a position.

    PyYAML's constructors let ValueError ("!!int x", month 13 in a date, an integer of more than
    4300 digits), KeyError ("!!bool maybe") and AttributeError ("!!timestamp x") escape, without a line.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, AttributeError) as exc:
            raise ConstructorError(None, None, f"cannot read {node.tag} value: {exc}", node.start_mark) from exc

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key given twice is an error (YAML says keys are unique; PyYAML keeps the last one silently)."""
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) or key is None:
                if key in seen:
                    raise ConstructorError(None, None, f"key {key!r} given twice in one mapping", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _parse(path: Path, raw: bytes) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its data, or ConfigError with the line."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte {exc.start})") from exc
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; position is its index
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{path}:{line}: not valid YAML: {exc}") from exc
    try:
        node = loader.get_single_node()
        return node, None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line}: not valid YAML: {exc}") from exc
    except RecursionError as exc:  # PyYAML composes nested collections recursively
        line = loader.get_mark().line + 1
        raise ConfigError(f"{path}:{line}: not valid YAML: nested too deeply") from exc
    finally:
        loader.dispose()


def load_instruments(path: Path) -> Instruments:
    """Parse and validate ``path``; any problem raises ConfigError naming file, line and key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: instruments file not found") from exc
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"{path}: instruments file cannot be read: {exc.strerror or exc}") from exc
    node, data = _parse(path, raw)
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _lines(node, (), lines, set())
    try:
        return Instruments.model_validate(_normalize(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p != "[key]")
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, _LocatedError):
                loc = cause.loc
            # a key as written may hold a newline or other control characters: shown escaped, one problem a line
            key = ".".join(repr(p) if isinstance(p, str) and not p.isprintable() else str(p) for p in loc)
            key = key or "(top level)"
            problems.append(f"{path}:{_line_of(lines, loc)}: {key}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from exc
