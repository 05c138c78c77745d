"""Property-based fuzzing of ``instruments.yaml`` loading (issue 6), seeded with config/instruments.yaml.

Inputs: one structural mutation at a known key (dropped, wrong type, out of range, unknown, a symbol
spelled any way), several at random, YAML syntax damage, random bytes, and huge, deep, self-referencing
or alias-multiplying documents. Loading either returns a valid typed config or raises ConfigError whose
first line names the file and a line of it (every line, for validation errors, also the key); a mutation
at a known key is reported at that key and its line. No other exception escapes.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pydantic import ValidationError

from feed_handlers.instruments import ExchangeConfig, Instrument, Instruments, load_instruments
from k2.errors import ConfigError
from tests.support import REPO

SEED_TEXT = (REPO / "config" / "instruments.yaml").read_text()
SEED: dict[str, Any] = yaml.safe_load(SEED_TEXT)
EXCHANGES = tuple(SEED["exchanges"])
# What the loader must enforce, restated from its docstrings: the whole text must match.
SYMBOL = {
    "binance": re.compile(r"[A-Z0-9]{2,20}"),
    "kraken": re.compile(r"[A-Za-z0-9.]{1,16}/[A-Z0-9]{2,10}"),
    "coinbase": re.compile(r"[A-Z0-9]{1,16}-[A-Z0-9]{2,10}"),
}
CANONICAL = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{2,10}")
REQUIRED = ("ws_url", "channel", "partitions", "symbols")
OPTIONAL = ("enabled", "rest_url")


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config") / "instruments.yaml"


def load(path: Path, content: bytes | str) -> Instruments | ConfigError:
    """Write ``content`` to ``path`` and load it: a checked valid config, or a checked ConfigError."""
    raw = content if isinstance(content, bytes) else content.encode(errors="surrogatepass")
    path.write_bytes(raw)
    try:
        config = load_instruments(path)
    except ConfigError as exc:
        check_error(path, raw, exc)
        _count("ConfigError")
        return exc
    check_valid(config)
    _count("valid")
    return config


def _count(outcome: str) -> None:
    if currently_in_test_context():  # a Hypothesis example: shown with --hypothesis-show-statistics
        event(outcome)


def check_error(path: Path, raw: bytes, exc: ConfigError) -> None:
    last_line = max(raw.count(b"\n"), len(raw.decode(errors="replace").splitlines())) + 1
    message = str(exc)
    lines = message.split("\n") if isinstance(exc.__cause__, ValidationError) else message.split("\n")[:1]
    for line in lines:  # a YAML error's own text goes on over several lines after the first
        match = re.match(rf"{re.escape(str(path))}:([0-9]+): (.+)", line)
        assert match, message
        assert 1 <= int(match[1]) <= last_line, message
        if isinstance(exc.__cause__, ValidationError):
            assert re.match(r".+: .", match[2]), message  # "<dotted key>: <what is wrong>"


def check_valid(config: Instruments) -> None:
    assert type(config) is Instruments
    assert set(config.exchanges) <= set(EXCHANGES)
    for name, exchange in config.exchanges.items():
        assert type(exchange) is ExchangeConfig
        assert type(exchange.enabled) is bool
        assert type(exchange.ws_url) is str and re.match(r"wss?://", exchange.ws_url)
        assert exchange.rest_url is None or (
            type(exchange.rest_url) is str and re.match(r"https?://", exchange.rest_url)
        )
        assert type(exchange.channel) is str
        assert type(exchange.partitions) is int and 1 <= exchange.partitions <= 1024
        assert type(exchange.symbols) is tuple and exchange.symbols
        for instrument in exchange.symbols:
            assert type(instrument) is Instrument
            assert type(instrument.symbol) is str and SYMBOL[name].fullmatch(instrument.symbol), instrument
            assert type(instrument.canonical) is str and CANONICAL.fullmatch(instrument.canonical), instrument
    with pytest.raises(ValidationError):
        config.exchanges = {}  # frozen


def dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)


def line_of(text: str, key_path: tuple[str | int, ...]) -> int:
    """The line of the key (or list item) at ``key_path``, found in the text's node tree."""
    node = yaml.compose(text)
    assert node is not None
    line = node.start_mark.line + 1
    for part in key_path:
        if isinstance(node, yaml.MappingNode):
            key, node = next((k, v) for k, v in node.value if k.value == part)
            line = key.start_mark.line + 1
        else:
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


Draw = Callable[..., Any]  # st.DrawFn, or a DataObject's draw


def fuzz(examples: int) -> settings:
    """Reproducible in CI: derandomized, no example database; no deadline (a few documents are megabytes)."""
    return settings(database=None, derandomize=True, deadline=None, max_examples=examples)


# -- one mutation at a known key: reported there -----------------------------------------------------------

names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).map(lambda s: f"zz{s}")
containers = st.sampled_from([[1], ["x", 2], {"a": 1}, {"ws_url": "wss://x"}, [[]]])
scalars = st.sampled_from([0, -1, 1025, 10**30, 1.5, float("inf"), "", "abc", "wss", True, None, "2001-12-14"])
WELL_SPELLED = {
    "binance": ["BTCUSDT", "ETHUSDT", "1000SATSUSDT"],
    "kraken": ["BTC/USD", "AAPLx/USD", "ETH/EUR"],
    "coinbase": ["BTC-USD", "ETH-USDT", "00-USD"],
}
CANONICALS = ["BTC-USDT", "ETH-USD", "1000SATS-USDT"]


def misspelled(text: str) -> st.SearchStrategy[str]:
    """``text`` itself half the time, else with one thing wrong that a loose pattern would let through."""
    variants = [
        text + "\n",
        text + "\r\n",
        text + " ",
        " " + text,
        text + "\t",
        text.lower(),
        text + "\u0661",
        text * 3,
    ]
    return st.just(text) | st.sampled_from(variants)


def symbol_texts(exchange: str) -> st.SearchStrategy[str]:
    """Symbols of ``exchange`` spelled in any way: the loader must take one exactly when the whole text is one."""
    others = [symbol for symbols in WELL_SPELLED.values() for symbol in symbols]
    anything = st.from_regex(r"[A-Za-z0-9./-]{1,24}", fullmatch=True) | st.sampled_from(others)
    return (st.sampled_from(WELL_SPELLED[exchange]) | anything).flatmap(misspelled)


canonical_texts = (st.sampled_from(CANONICALS) | st.from_regex(r"[A-Za-z0-9-]{1,24}", fullmatch=True)).flatmap(
    misspelled
)


def _symbol(data: dict[str, Any], exchange: str, i: int, draw: Draw) -> tuple[str | int, ...] | None:
    """Replace symbol ``i`` of ``exchange``; the key path that must be reported, None if the spelling is valid."""
    symbol = draw(symbol_texts(exchange))
    if draw(st.booleans()):  # "- SYMBOL": canonical is the symbol, "/" read as "-"
        data["exchanges"][exchange]["symbols"][i] = symbol
        canonical = symbol.replace("/", "-").upper()
    else:  # "- SYMBOL: CANONICAL"
        canonical = draw(canonical_texts)
        data["exchanges"][exchange]["symbols"][i] = {symbol: canonical}
    valid = SYMBOL[exchange].fullmatch(symbol) and CANONICAL.fullmatch(canonical)
    if not valid:
        return ("exchanges", exchange, "symbols", i)
    # each symbol once and each canonical once: a repeat is reported at the later of the two items
    items = [_pair(item) for item in data["exchanges"][exchange]["symbols"]]
    repeats = [j for j, (s, c) in enumerate(items) if j != i and (s == symbol or c == canonical)]
    return ("exchanges", exchange, "symbols", max(i, *repeats)) if repeats else None


def _pair(item: str | dict[str, str]) -> tuple[str, str]:
    """(symbol, canonical) of a symbols item in either short form."""
    if isinstance(item, str):
        return item, item.replace("/", "-").upper()
    ((symbol, canonical),) = item.items()
    return symbol, canonical


def _mutate(data: dict[str, Any], draw: Draw) -> tuple[tuple[str | int, ...] | None, tuple[str | int, ...]]:
    """Apply one mutation; return (the key path that must be reported, or None if the result is valid;
    the key path whose line it must be reported at). On the seed every mutation applies; after others
    (several per document), one whose target is gone does nothing."""
    present = [name for name in EXCHANGES if isinstance(data["exchanges"].get(name), dict)]
    if not present:
        return None, ()
    exchange = draw(st.sampled_from(present))
    config = data["exchanges"][exchange]
    at = ("exchanges", exchange)
    kind = draw(st.sampled_from(["unknown key", "drop", "wrong type", "bad value", "symbol", "rename"]))
    if kind == "unknown key":
        where = draw(st.sampled_from([(), ("exchanges",), at]))
        key = draw(names)
        target: dict[str, Any] = data
        for part in where:
            target = target[part]
        target[key] = draw(scalars | containers)
        return (*where, key), (*where, key)
    if kind == "drop" and config:
        field = draw(st.sampled_from(sorted(config)))
        del config[field]
        return ((*at, field) if field in REQUIRED else None), at
    if kind == "wrong type":  # a collection where a scalar goes, a scalar where the symbol list goes
        field = draw(st.sampled_from(REQUIRED + OPTIONAL))
        config[field] = draw(scalars if field == "symbols" else containers)
        return (*at, field), (*at, field)
    if kind == "bad value":
        field, value = draw(
            st.sampled_from([("partitions", v) for v in (0, -1, 1025, 10**30, 1.5, "abc", None)])
            | st.sampled_from([("ws_url", v) for v in ("http://x", "ftp://x", "", "wss:/x", " wss://x")])
            | st.sampled_from([("rest_url", v) for v in ("ws://x", "", "https:/x")])
            | st.sampled_from([("symbols", [])])
        )
        config[field] = value
        return (*at, field), (*at, field)
    if kind == "symbol" and isinstance(config.get("symbols"), list) and config["symbols"]:
        i = draw(st.integers(0, len(config["symbols"]) - 1))
        reported = _symbol(data, exchange, i, draw)
        return reported, reported or (*at, "symbols", i)
    if kind == "rename":
        new = draw(names)
        data["exchanges"] = {new if name == exchange else name: value for name, value in data["exchanges"].items()}
        return ("exchanges", new), ("exchanges", new)
    return None, ()


def _report(path: Path, text: str, reported: tuple[str | int, ...] | None, at: tuple[str | int, ...]) -> None:
    """Load ``text``: valid when nothing is ``reported``, else an error at that key, on the line of ``at``."""
    outcome = load(path, text)
    if reported is None:
        assert isinstance(outcome, Instruments), outcome
        return
    assert isinstance(outcome, ConfigError), text
    key = re.escape(".".join(str(p) for p in reported))
    expected = rf"{re.escape(str(path))}:{line_of(text, at)}: {key}[.:]"
    assert any(re.match(expected, line) for line in str(outcome).split("\n")), (expected, str(outcome))


@fuzz(400)
@given(st.data())
def test_a_mutation_at_a_key_is_reported_at_that_key_and_line(path: Path, data: st.DataObject) -> None:
    document = copy.deepcopy(SEED)
    reported, at = _mutate(document, data.draw)
    _report(path, dump(document), reported, at)


@fuzz(300)
@given(st.sampled_from(EXCHANGES), st.data())
def test_a_symbol_is_taken_exactly_when_it_is_well_spelled(path: Path, exchange: str, data: st.DataObject) -> None:
    document = copy.deepcopy(SEED)
    i = data.draw(st.integers(0, len(document["exchanges"][exchange]["symbols"]) - 1))
    reported = _symbol(document, exchange, i, data.draw)
    _report(path, dump(document), reported, reported or ("exchanges", exchange, "symbols", i))


# -- random damage: valid, or an error naming the file and a line ----------------------------------------

JUNK_VALUES = [
    "!!int abc", "!!float x", "!!bool maybe", "!!timestamp x", "2001-13-45", "2001-02-30 25:61:61", "!!binary ?",
    "!!set {a}", "!!omap [1]", "!!python/object:os.system", "&a", "*a", "*undefined", "&a [*a]", "{", "[", "|", ">-",
    "'unterminated", '"\\x"', "? [a, b]", "<<: 5", "~", "!!null x", "!!str", "1" * 5000, "0x" + "f" * 5000,
    "1:2:3:4:5", "-.inf", ".nan", "!!float 1e99999", "!custom x", "!<tag:x> y", "%", "@", "`",
]  # fmt: skip
TOKENS = [":", ": ", "-", "- ", "[", "]", "{", "}", ",", "#", "&a ", "*a", "!!", "? ", "|", ">", "'", '"', "\t", "\n",
          "\n---\n", "\n...\n", "%YAML 1.1\n", "\ufeff", "\x00", "\x85", "\u2028", "\r", "\\", "  ", "\ud800"]  # fmt: skip


@fuzz(350)
@given(st.data())
def test_yaml_syntax_damage(path: Path, data: st.DataObject) -> None:
    lines = SEED_TEXT.split("\n")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["junk value", "token", "delete", "indent", "duplicate", "swap"]))
        if op == "junk value" and ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + data.draw(st.sampled_from(JUNK_VALUES))
        elif op == "token":
            at = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + data.draw(st.sampled_from(TOKENS) | st.text(max_size=3)) + lines[i][at:]
        elif op == "delete":
            at = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + lines[i][at + data.draw(st.integers(1, 12)) :]
        elif op == "indent":
            lines[i] = data.draw(st.sampled_from(["", " ", "\t", "     "])) + lines[i].lstrip(" ")
        elif op == "duplicate":
            lines.insert(i, lines[i])
        else:
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    load(path, "\n".join(lines))


@st.composite
def mutated_documents(draw: Draw) -> dict[str, Any]:
    document = copy.deepcopy(SEED)
    for _ in range(draw(st.integers(2, 5))):
        _mutate(document, draw)
    return document


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.dates() | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Several mutations of the seed; the seed's shape with anything at any place; anything.
documents = (
    mutated_documents()
    | st.fixed_dictionaries({"exchanges": st.dictionaries(st.sampled_from(EXCHANGES), values)})
    | values
)


@fuzz(200)
@given(documents)
def test_several_mutations_and_random_documents(path: Path, document: Any) -> None:
    load(path, dump(document))


@fuzz(250)
@given(st.binary(max_size=400) | st.text(max_size=200))
def test_random_bytes(path: Path, content: bytes | str) -> None:
    load(path, content)


# -- huge, deep and self-referencing documents -----------------------------------------------------------


def _bomb(levels: int) -> str:
    """``levels`` lines of nine aliases to the line before: 9**levels nodes once expanded ("billion laughs")."""
    lines = ["lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


SYMBOL_LINES = "".join(f"      - S{i}USDT: S{i}-USDT\n" for i in range(10_000))
UNKNOWN_KEYS = "".join(f"    zz{i}: 1\n" for i in range(2_000))
HUGE: dict[str, tuple[str, str | None]] = {
    # name: (document, what the first line of the error says after "<file>:", or None when valid)
    "2 MB comment": ("# " + "x" * (2 << 20) + "\n" + SEED_TEXT, None),
    "1 MB url": (SEED_TEXT.replace("wss://ws.kraken.com/v2", "wss://" + "k" * (1 << 20)), None),
    "10 000 symbols": (SEED_TEXT.replace("      - SOLUSDT: SOL-USDT\n", SYMBOL_LINES), None),
    "2 000 unknown keys": (SEED_TEXT.replace("    partitions: 40\n", "    partitions: 40\n" + UNKNOWN_KEYS), "14: "),
    "5 000-digit integer": (SEED_TEXT.replace("partitions: 40", "partitions: " + "9" * 5000), "13: not valid YAML"),
    "10 000 nested flow lists": ("exchanges: " + "[" * 10_000 + "]" * 10_000 + "\n", "1: not valid YAML"),
    "10 000 nested flow maps": ("exchanges: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "1: not valid YAML"),
    "10 000 nested block lists": ("exchanges:\n  " + "- " * 10_000 + "x\n", "2: not valid YAML"),
    "20 000 unclosed brackets": ("exchanges: " + "[" * 20_000 + "\n", "1: not valid YAML"),
    "self-referencing list": (
        SEED_TEXT.replace("      - SOLUSDT: SOL-USDT\n", "      - &me [*me]\n"),
        "17: exchanges.binance.symbols.2: ",
    ),
    "self-referencing map": ("exchanges: &me {binance: *me}\n", "1: exchanges.binance."),
    "billion laughs, unknown key": (_bomb(9) + SEED_TEXT, "1: lol0: "),
    # An alias has no line of its own in PyYAML's node tree: the item is reported where its anchor is.
    "billion laughs in symbols": (
        _bomb(9) + SEED_TEXT.replace("      - SOLUSDT: SOL-USDT\n", "      - *lol8\n"),
        "9: exchanges.binance.symbols.2: ",
    ),
    "1 000 documents": ((SEED_TEXT + "---\n") * 1000, "34: not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_deep_and_self_referencing_documents(path: Path, name: str) -> None:
    document, error = HUGE[name]
    started = time.monotonic()
    outcome = load(path, document)
    # Unbounded work shows here: walking the nine-alias lines node by node takes hours.
    assert time.monotonic() - started < 60
    if error is None:
        assert isinstance(outcome, Instruments), outcome
    else:
        assert isinstance(outcome, ConfigError)
        assert str(outcome).startswith(f"{path}:{error}"), str(outcome)[:300]


# -- the inputs that found the bugs fixed with these tests: each a ConfigError at its line ---------------

FOUND = {
    "invalid UTF-8": (SEED_TEXT.encode().replace(b"# trade | aggTrade", b"# trade \xff aggTrade"), 12),
    "exchanges is a list": (b"exchanges: [1, 2]\n", 1),
    "exchanges is a set": (b"exchanges: !!set {a, b}\n", 1),
    "!!int with no digits": (SEED_TEXT.replace("partitions: 40", "partitions: !!int abc").encode(), 13),
    "!!float with no number": (SEED_TEXT.replace("partitions: 40", "partitions: !!float abc").encode(), 13),
    "!!bool maybe": (SEED_TEXT.replace("partitions: 40", "partitions: !!bool maybe").encode(), 13),
    "!!timestamp that is none": (SEED_TEXT.replace("partitions: 40", "partitions: !!timestamp x").encode(), 13),
    "month 13": (SEED_TEXT.replace("partitions: 20\n    symbols:\n      - BTC/USD", "partitions: 2001-13-45\n    symbols:\n      - BTC/USD").encode(), 22),
    "symbol ending in a newline": (SEED_TEXT.replace("- BTCUSDT: BTC-USDT", '- "BTCUSDT\\n": BTC-USDT').encode(), 15),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FOUND))
def test_inputs_that_escaped_before(path: Path, name: str) -> None:
    document, error_line = FOUND[name]
    outcome = load(path, document)
    assert isinstance(outcome, ConfigError)
    assert str(outcome).startswith(f"{path}:{error_line}: "), str(outcome)[:300]


def test_a_directory_is_a_config_error(path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path.parent))}: instruments file cannot be read"):
        load_instruments(path.parent)
