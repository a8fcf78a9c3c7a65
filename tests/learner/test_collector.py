from __future__ import annotations

import gc
import weakref

from learner.collector import FULL_COLLECTION_EVERY_POLLS, collect_between_polls


def test_collection_runs_between_polls_and_is_restored() -> None:
    assert gc.isenabled()
    with collect_between_polls() as after_poll:
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
        young, full = gc.get_stats()[1]["collections"], gc.get_stats()[2]["collections"]
        for _ in range(FULL_COLLECTION_EVERY_POLLS):
            after_poll()
        assert gc.get_stats()[1]["collections"] - young == FULL_COLLECTION_EVERY_POLLS - 1
        assert gc.get_stats()[2]["collections"] - full == 1
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_cyclic_garbage_made_during_a_batch_is_freed_after_the_poll() -> None:
    with collect_between_polls() as after_poll:
        node = _Node()
        freed = weakref.ref(node)
        del node
        assert freed() is not None  # automatic collection is off
        after_poll()
        assert freed() is None


def test_two_learners_in_one_process_restore_the_collector_when_the_last_leaves() -> None:
    with collect_between_polls():
        with collect_between_polls():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer learner still runs
    assert gc.isenabled()
