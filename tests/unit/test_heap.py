"""settle_heap: what exists is frozen, garbage made afterwards is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from cti.heap import settle_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_objects_alive_at_settle_are_frozen_and_later_garbage_is_collected() -> None:
    before = _cycle()  # unreachable already: the collection in settle_heap frees it, nothing freezes it
    kept = _Node()
    kept.other = kept  # reachable and cyclic: frozen
    frozen = settle_heap(young_threshold=4_321)

    assert before() is None
    assert frozen == gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == 4_321
    assert gc.get_threshold()[1] >= 20
    assert any(obj is kept for obj in gc.get_objects()) is False  # out of every later collection

    after = _cycle()
    assert after() is not None
    gc.collect()
    assert after() is None
