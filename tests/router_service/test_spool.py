"""The durable event spool: order, delivery marks, depth, persistence across reopen."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from router_service.spool import EventSpool, SpoolError


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[EventSpool]:
    with EventSpool(tmp_path / "spool.sqlite3") as opened:
        yield opened


def test_append_many_returns_increasing_seqs_and_pending_is_in_order(spool: EventSpool) -> None:
    seqs = spool.append_many([("t1", b"a"), ("t2", b"b"), ("t1", b"c")])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    rows = spool.pending(10)
    assert [(r.seq, r.key, r.payload) for r in rows] == [
        (seqs[0], "t1", b"a"),
        (seqs[1], "t2", b"b"),
        (seqs[2], "t1", b"c"),
    ]
    assert spool.depth() == 3


def test_pending_limit_returns_the_oldest(spool: EventSpool) -> None:
    spool.append_many([("k", bytes([i])) for i in range(10)])
    assert [r.payload for r in spool.pending(3)] == [b"\x00", b"\x01", b"\x02"]


def test_delivered_rows_leave_pending_and_come_back_for_another_cluster(
    spool: EventSpool,
) -> None:
    seqs = spool.append_many([("k", str(i).encode()) for i in range(5)])
    assert spool.mark_delivered(seqs[2], "cluster-a", now=100.0) == 3
    assert [r.payload for r in spool.pending(10)] == [b"3", b"4"]
    assert spool.depth() == 2
    assert spool.redeliver_unless("cluster-a") == 0
    assert spool.redeliver_unless("cluster-b") == 3
    assert [r.payload for r in spool.pending(10)] == [b"0", b"1", b"2", b"3", b"4"]


def test_appended_seqs_are_the_pending_rows_and_marking_stops_at_the_seq_given(
    spool: EventSpool,
) -> None:
    first = spool.append_many([("k", b"a"), ("k", b"b")])
    second = spool.append_many([("k", b"c"), ("k", b"d"), ("k", b"e")])
    assert [r.seq for r in spool.pending(10)] == first + second
    assert spool.mark_delivered(second[0], "c", now=1.0) == 3
    assert spool.redeliver_unless("other") == 3
    assert spool.mark_delivered(first[1], "c", now=2.0) == 2  # only what is pending again
    assert [r.payload for r in spool.pending(10)] == [b"c", b"d", b"e"]


def test_forget_delivered_deletes_only_rows_delivered_before_the_horizon(
    spool: EventSpool,
) -> None:
    seqs = spool.append_many([("k", str(i).encode()) for i in range(4)])
    spool.mark_delivered(seqs[0], "c", now=10.0)
    spool.mark_delivered(seqs[1], "c", now=20.0)
    assert spool.forget_delivered(before=15.0) == 1
    assert spool.redeliver_unless("other") == 1  # only the row delivered at 20 is left
    assert [r.payload for r in spool.pending(10)] == [b"1", b"2", b"3"]


def test_seqs_never_go_back_after_the_spool_empties(spool: EventSpool) -> None:
    first = spool.append(key="k", payload=b"x")
    spool.mark_delivered(first, "c", now=1.0)
    assert spool.forget_delivered(before=2.0) == 1
    assert spool.append(key="k", payload=b"y") > first


def test_events_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with EventSpool(path) as spool:
        spool.append_many([("t1", b"a"), ("t2", b"b")])
        spool.mark_delivered(spool.pending(1)[0].seq, "c", now=1.0)
    with EventSpool(path) as reopened:
        assert [(r.key, r.payload) for r in reopened.pending(10)] == [("t2", b"b")]
        assert reopened.depth() == 1


def test_a_second_reader_sees_committed_appends(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with EventSpool(path) as writer, EventSpool(path) as reader:
        writer.append_many([("t", b"1")])
        assert [r.payload for r in reader.pending(10)] == [b"1"]


def test_concurrent_appends_keep_every_event(spool: EventSpool) -> None:
    def append(thread: int) -> None:
        for i in range(50):
            spool.append_many([(f"t{thread}", f"{thread}-{i}".encode())])

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = spool.pending(1000)
    assert len(rows) == 200
    for n in range(4):
        mine = [r.payload for r in rows if r.key == f"t{n}"]
        assert mine == [f"{n}-{i}".encode() for i in range(50)]


def test_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "spool.sqlite3")
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append("k", b"x")


@pytest.mark.parametrize("limit", [0, -1])
def test_pending_rejects_a_non_positive_limit(spool: EventSpool, limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        spool.pending(limit)


def test_unopenable_path_names_the_spool(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot open the event spool") as info:
        EventSpool(blocker / "spool.sqlite3")
    assert info.value.field == "spool_path"
    assert info.value.retriable
