"""What the router keeps of a decision once it is made: a few fields and the JSON answer.

The decide endpoint builds the answer as plain data and serialises it once with orjson; the
task store, the activity log and the metrics read the fields they need from ``ServedDecision``
instead of a validated ``Decision`` model, which would cost more than the decision itself.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass

import zstandard

from router_service.ledger import DecisionRef
from router_service.schemas import Decision, LedgerView

TOP_TOLERANCE = 1e-9
ZSTD_FRAME = b"\x28\xb5\x2f\xfd"  # a zstd frame's magic number; zlib streams start otherwise
_compressors = threading.local()  # zstd compressors are not safe to share between threads


@dataclass(frozen=True, slots=True)
class ServedDecision:
    """A decision's summary fields and its JSON body exactly as the endpoint answers it."""

    decision_id: str
    task_id: str
    model: str | None
    action: str
    propensity: float | None
    explored: bool | None
    rules: tuple[tuple[str, str], ...]  # (rule, action) of each rule that fired
    trust_domain: str
    step_kind: str
    step_type: str
    max_output_tokens: int
    reserved_dollars: float
    created_at: float  # unix seconds
    ledger: LedgerView  # the task's books after the decision
    json: bytes
    packed: bytes  # ``json`` compressed once, for the ledger store and the activity log

    @classmethod
    def of(cls, decision: Decision) -> ServedDecision:
        """The summary of a ``Decision`` model (for callers that hold one)."""
        return cls(
            decision_id=decision.decision_id,
            task_id=decision.task_id,
            model=decision.model,
            action=decision.action,
            propensity=decision.propensity,
            explored=explored(decision.model, decision.propensity, _top(decision)),
            rules=tuple((r.rule, r.action) for r in decision.rules),
            trust_domain=decision.trust_domain.name,
            step_kind=decision.step.kind,
            step_type=decision.step.type,
            max_output_tokens=decision.max_output_tokens,
            reserved_dollars=decision.reserved_dollars,
            created_at=decision.created_at.timestamp(),
            ledger=decision.ledger,
            json=(body := decision.model_dump_json().encode()),
            packed=pack(body),
        )

    def ref(self) -> DecisionRef:
        """What an outcome for this decision needs to know about it."""
        return DecisionRef(
            self.decision_id,
            self.task_id,
            self.model,
            self.action,
            self.step_kind,
            self.step_type,
            self.max_output_tokens,
            self.reserved_dollars,
        )

    @property
    def is_step(self) -> bool:
        """Whether a model was handed a step (an outcome is expected)."""
        return self.model is not None and self.action != "require_confirmation"


def pack(decision_json: bytes) -> bytes:
    """A decision's JSON, compressed for keeping: zstd level 1, as small as zlib's level 1 at
    about a third of its cost (it is on the hot path).

    The frame is copied out: zstandard allocates its output at the compressed size's upper
    bound, and a frame kept in that allocation leaves the rest of it as a hole in the heap
    (in service_perf's router child, 52 MB more RSS at 100,000 decisions).
    """
    compressor = getattr(_compressors, "zstd", None)
    if compressor is None:
        compressor = _compressors.zstd = zstandard.ZstdCompressor(level=1)
    return memoryview(compressor.compress(decision_json)).tobytes()


def unpack(packed: bytes) -> bytes:
    """What :func:`pack` kept; history written before zstd is zlib."""
    if packed.startswith(ZSTD_FRAME):
        return zstandard.decompress(packed)
    return zlib.decompress(packed)


def _top(decision: Decision) -> float | None:
    return max((a.probability for a in decision.alternatives), default=None)


def explored(model: str | None, propensity: float | None, top: float | None) -> bool | None:
    """Whether the served model was not the policy's top choice; None when nothing was drawn."""
    if model is None or propensity is None or top is None:
        return None
    return propensity < top - TOP_TOLERANCE
