"""On PostgreSQL a decision is drafted on unlocked books; a lost race retries, then locks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from router_service.api.decisions import DRAFT_TRIES
from router_service.app import create_app
from router_service.ledger import Reservation
from router_service.ledger_postgres import PostgresDraft
from router_service.settings import Settings
from tests.conftest import ADMIN_HEADERS, budget, step


def rival_reserves(draft: PostgresDraft) -> None:
    """Another replica books a cent on the task between this draft's read and its commit."""
    store = draft._store
    with store.transaction(draft.task_id) as txn:
        rival_id = f"rival_{txn.books.open_reservations}"
        expires_at = store.now() + 600
        txn.reserve(
            Reservation(
                rival_id, draft.task_id, "rival", "execution", 0.01, 0, 0, False, expires_at
            )
        )


@pytest.fixture
def client(settings: Settings, postgres_uri: str) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"ledger_uri": postgres_uri}))
    with TestClient(app, headers=ADMIN_HEADERS) as test_client:
        yield test_client


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each draft commit's result, in order; each rival in :data:`RIVALS` runs before one."""
    results: list[bool] = []
    real_commit = PostgresDraft.commit_on_loop

    async def commit(draft: PostgresDraft) -> bool:
        if RIVALS:
            RIVALS.pop(0)(draft)
        results.append(await real_commit(draft))
        return results[-1]

    monkeypatch.setattr(PostgresDraft, "commit_on_loop", commit)
    RIVALS.clear()
    return results


RIVALS: list[Callable[[PostgresDraft], None]] = []


def decide_once(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """A decision on a fresh task; its answer and the task afterwards."""
    task = client.post(
        "/v1/tasks", json={"task_type": "research", "trust_domain": "eng", "budget": budget()}
    ).json()
    answer = client.post("/v1/decide", json={"task_id": task["task_id"], "step": step()})
    assert answer.status_code == 200, answer.text
    return answer.json(), client.get(f"/v1/tasks/{task['task_id']}").json()


def test_an_undisturbed_draft_commits_the_decision(client: TestClient, commits: list[bool]) -> None:
    decision, task = decide_once(client)
    assert commits == [True]
    assert task["ledger"]["reserved_dollars"] == pytest.approx(decision["reserved_dollars"])
    assert [d["decision_id"] for d in task["decisions"]] == [decision["decision_id"]]


def test_a_draft_that_lost_a_race_is_decided_again_on_the_new_books(
    client: TestClient, commits: list[bool]
) -> None:
    RIVALS.append(rival_reserves)
    decision, task = decide_once(client)
    assert commits == [False, True]
    assert task["ledger"]["reserved_dollars"] == pytest.approx(decision["reserved_dollars"] + 0.01)
    assert task["ledger"]["steps"] == 2, "the rival's and the decision's"
    assert [d["decision_id"] for d in task["decisions"]] == [decision["decision_id"]]


def test_after_every_draft_lost_the_decision_is_made_under_the_lock(
    client: TestClient, commits: list[bool]
) -> None:
    RIVALS.extend([rival_reserves] * DRAFT_TRIES)
    decision, task = decide_once(client)
    assert commits == [False] * DRAFT_TRIES
    assert task["ledger"]["reserved_dollars"] == pytest.approx(
        decision["reserved_dollars"] + 0.01 * DRAFT_TRIES
    )
    assert task["ledger"]["steps"] == 1 + DRAFT_TRIES
    assert [d["decision_id"] for d in task["decisions"]] == [decision["decision_id"]]
