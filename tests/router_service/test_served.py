"""A decision's kept JSON: packed with zstd, and history packed with zlib still reads."""

from __future__ import annotations

import threading
import zlib

import orjson

from router_service.served import ZSTD_FRAME, pack, unpack

ANSWER = orjson.dumps({"decision_id": "dec_1", "alternatives": [{"model": "m"}] * 14})


def test_a_packed_answer_is_a_smaller_zstd_frame_that_unpacks_to_itself() -> None:
    packed = pack(ANSWER)
    assert packed.startswith(ZSTD_FRAME)
    assert len(packed) < len(ANSWER)
    assert unpack(packed) == ANSWER


def test_history_packed_with_zlib_unpacks() -> None:
    assert unpack(zlib.compress(ANSWER, 1)) == ANSWER


def test_threads_pack_at_once_without_sharing_a_compressor() -> None:
    answers = [orjson.dumps({"decision_id": f"dec_{i}", "n": [i] * 50}) for i in range(8)]
    results: dict[int, list[bytes]] = {}

    def pack_many(i: int) -> None:
        results[i] = [unpack(pack(answers[i])) for _ in range(300)]

    threads = [threading.Thread(target=pack_many, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == [answers[i]] * 300 for i in range(8))
