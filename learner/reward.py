"""Reward shaping: step quality, task credit and a budget price, in one number per update.

For a joined step (decision + outcome), with ``w`` the task-credit weight and ``lambda`` the
budget price of the step's trust domain (see :mod:`learner.allocator`)::

    value  = quality if success else 0
    value  = (1 - w) * value + w * task_value      when the task's result is known in time,
             task_value = task quality if the task succeeded else 0
    reward = value - lambda * cost_dollars / total_dollars

``total_dollars`` is the task's budget from its task-closed event when known, else the
decision's ``total_dollars`` if the event carries one, else the configured reference, so
``lambda`` is unit-free: the quality one would trade for spending the whole budget. The
learner calls VW with ``cost = -reward`` and the logged propensity.

Human corrections are labelled examples, learned with probability 1: ``preferred_model`` gives
the preferred action the high reward and the chosen one (if different) the low reward; a
``down`` rating gives the chosen action the low reward, an ``up`` rating the high one. When a
correction names a preferred model its rating is not used again.
"""

from __future__ import annotations

from dataclasses import dataclass

from learner.wire_events import Correction, Decision, Outcome, TaskClosed


@dataclass(frozen=True)
class RewardShaper:
    """Turns outcomes, task results and corrections into rewards."""

    task_credit_weight: float
    reference_task_dollars: float
    correction_high: float = 1.0
    correction_low: float = 0.0

    def task_dollars(self, decision: Decision, task: TaskClosed | None) -> float:
        """The budget that normalises a step's cost."""
        if task is not None:
            return task.total_dollars
        logged = getattr(decision, "total_dollars", None)
        return float(logged) if logged else self.reference_task_dollars

    def step_reward(
        self,
        decision: Decision,
        outcome: Outcome,
        task: TaskClosed | None,
        budget_price: float,
    ) -> float:
        """Quality (with task credit) minus ``budget_price`` times the budget fraction spent."""
        value = outcome.quality if outcome.success else 0.0
        if task is not None and self.task_credit_weight > 0:
            task_value = task.quality if task.success else 0.0
            value = (1 - self.task_credit_weight) * value + self.task_credit_weight * task_value
        spent = outcome.cost_dollars / self.task_dollars(decision, task)
        return value - budget_price * spent

    def correction_updates(
        self, decision: Decision, correction: Correction
    ) -> list[tuple[int, float]]:
        """(action index, reward) pairs to learn with probability 1."""
        chosen = decision.chosen_index
        if correction.preferred_model is not None:
            preferred = decision.actions.index(correction.preferred_model)
            updates = [(preferred, self.correction_high)]
            if preferred != chosen:
                updates.append((chosen, self.correction_low))
            return updates
        if correction.rating == "down":
            return [(chosen, self.correction_low)]
        if correction.rating == "up":
            return [(chosen, self.correction_high)]
        return []
