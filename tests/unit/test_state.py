"""Trade-id state: duplicates dropped, late trades inside a gap accepted, gaps confirmed after grace."""

from __future__ import annotations

from feed_handlers.state import ConfirmedGap, LastTrade, TradeState


def test_contiguous_ids_duplicates_and_restart_ids() -> None:
    state = TradeState(grace_s=5.0, last_trades={"BTCUSDT": LastTrade(100)})
    assert [state.accept("BTCUSDT", i, 0.0).accepted for i in (99, 100, 101, 102, 101)] == [
        False, False, True, True, False,
    ]  # fmt: skip
    assert state.accept("ETHUSDT", 7, 0.0).accepted  # first id of a symbol: no gap
    assert state.last_id("BTCUSDT") == 102


def test_a_gap_fills_late_and_the_rest_is_confirmed_after_grace() -> None:
    state = TradeState(grace_s=5.0)
    state.accept("X", 10, 0.0)
    verdict = state.accept("X", 20, 1.0)
    assert (verdict.accepted, verdict.opened_gap) == (True, 9)
    assert state.accept("X", 15, 2.0).accepted  # arrives late over another connection
    assert not state.accept("X", 15, 2.0).accepted  # and only once
    assert state.accept("X", 11, 2.0).accepted
    assert state.open_gaps("X") == [(12, 14), (16, 19)]
    assert list(state.confirmed_gaps(5.9)) == []
    assert list(state.confirmed_gaps(6.0)) == [ConfirmedGap("X", 12, 14), ConfirmedGap("X", 16, 19)]
    assert list(state.confirmed_gaps(7.0)) == []  # reported once
    assert state.accept("X", 13, 8.0).accepted  # late but real: accepted, once
    assert not state.accept("X", 13, 8.0).accepted
    list(state.confirmed_gaps(57.0))  # 10 x grace after the report the gap is forgotten
    assert state.open_gaps("X") == []
    assert not state.accept("X", 14, 58.0).accepted
