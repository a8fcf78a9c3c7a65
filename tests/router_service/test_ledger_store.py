"""Choosing the ledger store by URI: the default, each scheme, and bad URIs failing fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from router_service.embedded_broker import free_port
from router_service.errors import ConfigError
from router_service.ledger_memory import InMemoryLedger
from router_service.ledger_postgres import PostgresLedgerStore
from router_service.ledger_sqlite import SqliteLedgerStore
from router_service.ledger_store import default_ledger_uri, open_ledger_store
from router_service.settings import Settings
from router_service.state import RouterState


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("redis://localhost:6379/0", "unknown ledger store 'redis'"),
        ("ledger.sqlite3", "unknown ledger store"),
        ("sqlite://", "needs a file path"),
        ("sqlite:///tmp/l.db?synchronous=OFF", "synchronous=OFF: expected NORMAL or FULL"),
    ],
)
def test_a_bad_ledger_uri_fails_at_startup_naming_the_setting(uri: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=rf"BUDGET_ROUTER_LEDGER_URI: .*{expected}"):
        Settings(ledger_uri=uri)


def test_the_uri_picks_the_store(tmp_path: Path, postgres_uri: str) -> None:
    stores = [
        open_ledger_store("memory://"),
        open_ledger_store(f"sqlite:///{tmp_path}/a.sqlite3?synchronous=FULL"),
        open_ledger_store(postgres_uri),
    ]
    try:
        kinds = [type(s) for s in stores]
        assert kinds == [InMemoryLedger, SqliteLedgerStore, PostgresLedgerStore]
        assert (tmp_path / "a.sqlite3").is_file()
    finally:
        for store in stores:
            store.close()


def test_the_router_keeps_its_ledger_in_the_data_dir_by_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", prior_examples_per_kind=2)
    state = RouterState.build(settings)
    try:
        assert isinstance(state.ledger, SqliteLedgerStore)
        assert (tmp_path / "var" / "ledger.sqlite3").is_file()
        assert default_ledger_uri(settings.data_dir).endswith("/var/ledger.sqlite3")
    finally:
        state.close()


def test_an_unreachable_postgres_fails_fast_naming_the_setting() -> None:
    uri = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/ledger"
    with pytest.raises(ConfigError, match="BUDGET_ROUTER_LEDGER_URI: cannot reach") as caught:
        PostgresLedgerStore(uri, connect_timeout=1)
    assert "secret" not in str(caught.value), "the password stays out of error messages"
