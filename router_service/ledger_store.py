"""Pick the ledger store by URI: ``sqlite:///path``, ``postgresql://...`` or ``memory://``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from router_service.ledger import LedgerStore

LEDGER_FILE = "ledger.sqlite3"
SCHEMES = ("sqlite", "postgresql", "postgres", "memory")
SETTING = "BUDGET_ROUTER_LEDGER_URI"


def default_ledger_uri(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / LEDGER_FILE).resolve()}"


def check_ledger_uri(uri: str) -> str:
    """The URI if its scheme names a store; a message naming what is expected otherwise."""
    scheme = urlsplit(uri).scheme
    if scheme not in SCHEMES:
        raise ValueError(
            f"{SETTING}: unknown ledger store {uri.split('://')[0]!r}: expected sqlite:///PATH, "
            "postgresql://USER@HOST:PORT/DB or memory://"
        )
    if scheme == "sqlite" and not urlsplit(uri).path:
        raise ValueError(f"{SETTING}: sqlite:///PATH needs a file path, e.g. sqlite:///var/l.db")
    if scheme == "sqlite" and _synchronous(uri) not in ("NORMAL", "FULL"):
        raise ValueError(f"{SETTING}: synchronous={_synchronous(uri)}: expected NORMAL or FULL")
    return uri


def _synchronous(uri: str) -> str:
    return parse_qs(urlsplit(uri).query).get("synchronous", ["NORMAL"])[0].upper()


def open_ledger_store(uri: str) -> LedgerStore:
    """Open (creating tables as needed) the store ``uri`` names."""
    parts = urlsplit(check_ledger_uri(uri))
    if parts.scheme == "memory":
        from router_service.ledger_memory import InMemoryLedger

        return InMemoryLedger()
    if parts.scheme == "sqlite":
        from router_service.ledger_sqlite import SqliteLedgerStore

        return SqliteLedgerStore(Path(parts.path), synchronous=_synchronous(uri))  # type: ignore[arg-type]
    from router_service.ledger_postgres import PostgresLedgerStore

    return PostgresLedgerStore(uri)
