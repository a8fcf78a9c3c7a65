"""Follows the registry's ``champion`` alias and hands each new bundle to the router.

The watcher polls in a background thread. When the alias points at a different version (a
promotion or a rollback) it loads that bundle and calls ``on_new_bundle(bundle, version)``; the
router builds a new ``RoutingPolicy`` and swaps its reference. If the registry cannot be read,
the router keeps the model it has: the watcher marks itself stale, keeps the error, and retries
on the next poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from learner.model_bundle import ModelBundle
from learner.registry import CHAMPION, RegistryError


class ChampionSource(Protocol):
    """What the watcher needs from a registry."""

    def get_alias_version(self, alias: str) -> str | None: ...

    def load_bundle(self, version_or_alias: str) -> ModelBundle: ...


class ChampionWatcher:
    """Polls the champion alias and calls back with the bundle whenever its version changes."""

    def __init__(
        self,
        registry: ChampionSource,
        on_new_bundle: Callable[[ModelBundle, str], None],
        poll_seconds: float = 2.0,
        *,
        current_version: str | None = None,
        alias: str = CHAMPION,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self._registry = registry
        self._on_new_bundle = on_new_bundle
        self.poll_seconds = poll_seconds
        self.alias = alias
        self._version = current_version
        self._stale = False
        self._last_error: str | None = None
        self._last_checked_at: datetime | None = None
        self._last_success_at: datetime | None = None
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> str | None:
        """The registry version being served, or the version given at construction."""
        return self._version

    @property
    def stale(self) -> bool:
        return self._stale

    def check_now(self) -> bool:
        """Poll once; True if a new bundle was handed to the callback."""
        with self._check_lock:
            now = datetime.now(UTC)
            self._last_checked_at = now
            version: str | None = None
            changed = False
            try:
                version = self._registry.get_alias_version(self.alias)
                if version is not None and version != self._version:
                    changed = True
                    self._on_new_bundle(self._registry.load_bundle(version), version)
                    self._version = version
            except RegistryError as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
                return False
            except Exception as exc:  # a bad bundle must not kill the thread; keep the model
                self._fail(f"could not switch to {self.alias} version {version}: {exc!r}")
                return False
            self._stale = False
            self._last_error = None
            self._last_success_at = now
            return changed

    def status(self) -> dict[str, Any]:
        """Version served, staleness, the last error and when the registry was last checked."""
        return {
            "alias": self.alias,
            "version": self._version,
            "stale": self._stale,
            "last_error": self._last_error,
            "last_checked_at": _iso(self._last_checked_at),
            "last_success_at": _iso(self._last_success_at),
        }

    def start(self) -> None:
        """Start polling in a daemon thread (the first check happens at once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"champion-watcher-{self.alias}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and wait for the thread to finish its current check."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_now()
            self._stop.wait(self.poll_seconds)

    def _fail(self, message: str) -> None:
        self._stale = True
        self._last_error = message


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
