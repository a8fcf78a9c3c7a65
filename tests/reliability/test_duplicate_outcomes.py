"""Duplicate, late and unknown outcomes and corrections over HTTP, against the real SQLite ledger.

Each decision is booked once. The same outcome sent again (resent, concurrent) is answered
again and its event sent again under the same id, without booking it twice; a different second
outcome, or one after the reservation expired and was booked at its estimate, is a 409 that
says which booking stands. The ledger's dollars and tokens do not move. An outcome after the
task closed still settles its open reservation, once; closing twice is a 409 that sends the
close's event again. Unknown ids are a 404 naming the id; a resent correction keeps its event
id, so the learner learns it once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from learner.join import JoinBuffer, LearnCorrection
from router_service.app import create_app
from router_service.events import DecisionEvent, OutcomeEvent, TaskClosedEvent, decode_event
from router_service.ledger_sqlite import SqliteLedgerStore
from router_service.publisher import PublisherError
from router_service.settings import GovernorSettings, Settings
from router_service.spool import EventSpool
from router_service.state import SPOOL_FILE
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, budget, outcome, serve_in_thread, step

COST = 0.0125
DEADLINE_S = 10.0


def priced(decision_id: str, **overrides: Any) -> dict[str, Any]:
    """An outcome that reports its cost, so the booked dollars are known exactly."""
    return outcome(decision_id, **{"cost_dollars": COST, **overrides})


def open_and_decide(client: TestClient, task_id: str) -> dict[str, Any]:
    opened = client.post(
        "/v1/tasks", json={"task_id": task_id, "task_type": "x", "budget": budget()}
    )
    assert opened.status_code == 201, opened.text
    decided = client.post("/v1/decide", json={"task_id": task_id, "step": step()})
    assert decided.status_code == 200, decided.text
    assert decided.json()["model"] is not None
    return decided.json()


def ledger(client: TestClient, task_id: str) -> dict[str, Any]:
    return client.get(f"/v1/tasks/{task_id}").json()["ledger"]


def settlements(client: TestClient, task_id: str) -> list[tuple[str, bool, float, int, int]]:
    store = client.app.state.router.ledger
    assert isinstance(store, SqliteLedgerStore), "these tests are about the SQLite ledger"
    return store.settlements(task_id)


def error(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


def test_the_same_outcome_twice_books_once(client: TestClient) -> None:
    decision = open_and_decide(client, "dup")
    first = client.post("/v1/outcomes", json=priced(decision["decision_id"]))
    assert first.status_code == 202, first.text
    books = ledger(client, "dup")
    again = client.post("/v1/outcomes", json=priced(decision["decision_id"], cost_dollars=0.5))
    assert again.status_code == 409
    assert error(again)["field"] == "decision_id"
    assert "already has an outcome" in error(again)["message"]
    assert "expired" not in error(again)["message"]
    assert ledger(client, "dup") == books
    assert (books["spent_dollars"], books["reserved_dollars"]) == (pytest.approx(COST), 0)
    assert (books["input_tokens_used"], books["output_tokens_used"]) == (1_500, 200)
    assert settlements(client, "dup") == [(decision["decision_id"], False, COST, 1_500, 200)]


def test_an_outcome_whose_event_was_not_spooled_is_answered_and_sent_on_retry(
    client: TestClient, settings: Settings
) -> None:
    decision = open_and_decide(client, "retry")
    publisher = client.app.state.router.publisher
    spool_once = publisher.publish_durable_async

    async def failing(event: Any, timeout: float | None = None) -> None:
        publisher.publish_durable_async = spool_once  # the retry reaches the spool
        raise PublisherError("the event was not spooled: disk I/O error")

    publisher.publish_durable_async = failing
    report = priced(decision["decision_id"])
    first = client.post("/v1/outcomes", json=report)
    assert first.status_code == 503 and error(first)["code"] == "event_publisher_unavailable"
    again = client.post("/v1/outcomes", json=report)
    assert again.status_code == 202, again.text
    assert again.json()["cost_dollars"] == pytest.approx(COST)
    assert settlements(client, "retry") == [(decision["decision_id"], False, COST, 1_500, 200)]
    resent = client.post("/v1/outcomes", json=report)
    assert resent.status_code == 202
    events = spooled(settings, want=3)  # the decision and the outcome, sent twice
    outcomes = [event for event, _ in events if isinstance(event, OutcomeEvent)]
    assert len(outcomes) == 2 and outcomes[0].event_id == outcomes[1].event_id
    join = JoinBuffer(window=300, dedupe_window=600, task_wait=60, wait_for_task=False)
    learned = [s for event, raw in events for s in join.add(event, raw)]
    assert len(learned) == 1 and join.stats["duplicates"] == 1


def test_a_close_whose_event_was_not_spooled_sends_it_when_closed_again(
    client: TestClient, settings: Settings
) -> None:
    open_and_decide(client, "close-retry")
    publisher = client.app.state.router.publisher
    spool_once = publisher.publish_durable_async

    async def failing(event: Any, timeout: float | None = None) -> None:
        publisher.publish_durable_async = spool_once
        raise PublisherError("the event was not spooled: disk I/O error")

    publisher.publish_durable_async = failing
    close = {"success": True, "quality": 0.8}
    first = client.post("/v1/tasks/close-retry/close", json=close)
    assert first.status_code == 503
    again = client.post("/v1/tasks/close-retry/close", json=close)
    assert again.status_code == 409 and "already closed" in error(again)["message"]
    events = spooled(settings, want=2)  # the decision, then the close sent by the retry
    assert isinstance(events[1][0], TaskClosedEvent) and events[1][0].success


def test_concurrent_copies_of_one_outcome_book_once(settings: Settings) -> None:
    with (
        serve_in_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, headers=ADMIN_HEADERS) as http,
    ):
        http.post("/v1/tasks", json={"task_id": "race", "task_type": "x", "budget": budget()})
        decision = http.post("/v1/decide", json={"task_id": "race", "step": step()}).json()
        report = priced(decision["decision_id"])
        with ThreadPoolExecutor(8) as pool:
            statuses = Counter(
                pool.map(lambda _: http.post("/v1/outcomes", json=report).status_code, range(8))
            )
        books = http.get("/v1/tasks/race").json()["ledger"]
    assert statuses == {202: 8}
    assert books["spent_dollars"] == pytest.approx(COST)
    assert (books["input_tokens_used"], books["output_tokens_used"]) == (1_500, 200)


def test_an_outcome_after_the_task_closed_settles_once(client: TestClient) -> None:
    decision = open_and_decide(client, "late-close")
    closed = client.post("/v1/tasks/late-close/close", json={"success": True, "quality": 0.8})
    assert closed.status_code == 200, closed.text
    assert closed.json()["ledger"]["reserved_dollars"] == pytest.approx(
        decision["reserved_dollars"]
    )
    late = client.post("/v1/outcomes", json=priced(decision["decision_id"]))
    assert late.status_code == 202, "an in-flight step of a closed task still settles"
    resent = client.post("/v1/outcomes", json=priced(decision["decision_id"]))
    assert resent.status_code == 202
    other = client.post("/v1/outcomes", json=priced(decision["decision_id"], cost_dollars=0.5))
    assert other.status_code == 409
    task = client.get("/v1/tasks/late-close").json()
    assert task["status"] == "closed"
    assert task["ledger"]["spent_dollars"] == pytest.approx(COST)
    assert task["ledger"]["reserved_dollars"] == 0
    assert len(settlements(client, "late-close")) == 1
    refused = client.post("/v1/decide", json={"task_id": "late-close", "step": step()})
    assert refused.status_code == 409 and error(refused)["field"] == "task_id"
    twice = client.post("/v1/tasks/late-close/close", json={"success": True, "quality": 0.8})
    assert twice.status_code == 409 and "already closed" in error(twice)["message"]


@pytest.fixture
def short_ttl_client(tmp_path: Path) -> Iterator[TestClient]:
    """Reservations expire after 0.2 s, so a late outcome comes after the expiry."""
    settings = Settings(
        data_dir=tmp_path / "var",
        prior_examples_per_kind=10,
        seed=7,
        admin_key=ADMIN_KEY,
        governor=GovernorSettings(reservation_ttl_seconds=0.2),
    )
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as client:
        yield client


def wait_until_expired(client: TestClient, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while (books := ledger(client, task_id))["reserved_dollars"] > 0:
        assert time.monotonic() < deadline, f"the reservation of {task_id} never expired"
        time.sleep(0.05)
    return books


def test_an_outcome_after_the_reservation_expired_is_not_booked_again(
    short_ttl_client: TestClient,
) -> None:
    client = short_ttl_client
    decision = open_and_decide(client, "late-expiry")
    books = wait_until_expired(client, "late-expiry")
    estimate = decision["reserved_dollars"]
    assert books["spent_dollars"] == pytest.approx(estimate)
    late = client.post("/v1/outcomes", json=priced(decision["decision_id"]))
    assert late.status_code == 409
    assert error(late)["field"] == "decision_id"
    assert "expired and was booked at its estimate" in error(late)["message"]
    assert ledger(client, "late-expiry") == books
    [(decision_id, expired, cost, _, output)] = settlements(client, "late-expiry")
    assert (decision_id, expired, cost) == (decision["decision_id"], True, pytest.approx(estimate))
    assert output == decision["max_output_tokens"], "booked at the grant, not at the report"


@pytest.mark.parametrize(
    ("path", "body", "field", "unknown"),
    [
        ("/v1/outcomes", priced("dec_nope"), "decision_id", "dec_nope"),
        ("/v1/corrections", {"decision_id": "dec_nope", "rating": "up"}, "decision_id", "dec_nope"),
        ("/v1/corrections", {"task_id": "task_nope", "rating": "up"}, "task_id", "task_nope"),
        ("/v1/decide", {"task_id": "task_nope", "step": step()}, "task_id", "task_nope"),
    ],
)
def test_unknown_ids_are_404_naming_the_id(
    client: TestClient, path: str, body: dict[str, Any], field: str, unknown: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 404
    assert (error(response)["field"], error(response)["value"]) == (field, unknown)
    assert unknown in error(response)["message"]


def test_a_correction_naming_an_unknown_model_is_422_naming_preferred_model(
    client: TestClient,
) -> None:
    decision = open_and_decide(client, "cor-model")
    body = {"decision_id": decision["decision_id"], "preferred_model": "no-such-model"}
    response = client.post("/v1/corrections", json=body)
    assert response.status_code == 422
    assert error(response)["field"] == "preferred_model"
    assert "GET /v1/models" in error(response)["message"]


def test_an_outcome_for_a_decision_without_a_model_is_409(client: TestClient) -> None:
    client.post("/v1/tasks", json={"task_id": "no-model", "task_type": "x", "budget": budget()})
    aborted = client.post(
        "/v1/decide", json={"task_id": "no-model", "step": step(), "signals": {"retries": 9}}
    ).json()
    assert aborted["action"] == "abort" and aborted["model"] is None
    response = client.post("/v1/outcomes", json=priced(aborted["decision_id"]))
    assert response.status_code == 409 and error(response)["field"] == "decision_id"
    assert ledger(client, "no-model")["spent_dollars"] == 0


def spooled(settings: Settings, want: int) -> list[Any]:
    """The events in the router's spool, once ``want`` of them are there."""
    deadline = time.monotonic() + DEADLINE_S
    with EventSpool(settings.data_dir / SPOOL_FILE) as spool:
        while len(rows := spool.pending()) < want:
            assert time.monotonic() < deadline, f"{len(rows)} of {want} events spooled"
            time.sleep(0.02)
    return [(decode_event(row.payload), row.payload.decode()) for row in rows]


def test_a_resent_correction_is_one_event_for_the_learner(
    client: TestClient, settings: Settings
) -> None:
    decision = open_and_decide(client, "cor-dup")
    body = {"decision_id": decision["decision_id"], "rating": "down", "note": "too weak"}
    first = client.post("/v1/corrections", json=body)
    second = client.post("/v1/corrections", json=body)
    changed = client.post("/v1/corrections", json={**body, "rating": "up"})
    assert [r.status_code for r in (first, second, changed)] == [202, 202, 202]
    assert first.json()["event_id"] == second.json()["event_id"] != changed.json()["event_id"]
    events = spooled(settings, want=4)  # the decision and three corrections
    assert isinstance(events[0][0], DecisionEvent)
    join = JoinBuffer(window=300, dedupe_window=600, task_wait=60, wait_for_task=False)
    learned = [s for event, raw in events for s in join.add(event, raw)]
    corrections = [s.correction.rating for s in learned if isinstance(s, LearnCorrection)]
    assert corrections == ["down", "up"], "the resent correction must be learned once"
    assert join.stats["duplicates"] == 1


def test_a_correction_after_the_task_closed_is_accepted(client: TestClient) -> None:
    decision = open_and_decide(client, "cor-late")
    client.post("/v1/tasks/cor-late/close", json={"success": False, "quality": 0.1})
    body = {"decision_id": decision["decision_id"], "rating": "down"}
    response = client.post("/v1/corrections", json=body)
    assert response.status_code == 202
    assert response.json()["task_id"] == "cor-late"
