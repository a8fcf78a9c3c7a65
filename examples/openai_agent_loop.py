"""Where budget-router sits in an agent loop around an OpenAI-style chat call.

Runs offline: ``chat`` below is a fake with the shape of OpenAI's chat completions. Start the
router (``budget-router serve``) and run ``python examples/openai_agent_loop.py --url URL``.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from router_service.client import BudgetRouterClient

BUDGET = {
    "total_dollars": 0.20,
    "max_input_tokens": 100_000,
    "max_output_tokens": 10_000,
    "reserve_for_final_synthesis": 0.03,
    "reserve_for_human_handoff": 0.01,
    "hard_stop_after_retries": 2,
}
PLAN = [  # (kind, type): the steps this toy agent runs
    ("control", "planning"),
    ("execution", "extraction"),
    ("execution", "extraction"),
    ("verification", "self_check"),
    ("final_synthesis", "answer"),
]
rng = random.Random(0)


def chat(model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    """Fake ``client.chat.completions.create``: usage and a reply, small models fail more."""
    prompt_tokens = sum(len(m["content"]) // 4 + 4 for m in messages)
    failed = rng.random() < (0.3 if "mini" in model or "nano" in model else 0.1)
    reply = "" if failed else f"[{model}] done: {messages[-1]['content'][:40]}"
    completion_tokens = min(max_tokens, 60 + rng.randrange(120))
    return {
        "choices": [{"message": {"role": "assistant", "content": reply}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def run_task(router: BudgetRouterClient, question: str) -> None:
    messages = [{"role": "user", "content": question}]
    with router.task(task_type="research", budget=BUDGET, trust_domain="default") as task:
        for kind, step_type in PLAN:
            retries = 0
            while True:
                step = {
                    "kind": kind,
                    "type": step_type,
                    "input_tokens": sum(len(m["content"]) // 4 + 4 for m in messages),
                    "expected_output_tokens": 200,
                }
                decision = task.decide(step, signals={"retries": retries})
                print(f"{step_type:<12} -> {decision.model} ({decision.action})")
                if decision.action == "abort":
                    task.success = False
                    return
                if decision.model is None:  # skipped, or the governor asks to confirm first
                    break
                response = chat(decision.model, messages, decision.max_output_tokens)
                content = response["choices"][0]["message"]["content"]
                usage = response["usage"]
                task.report(
                    decision,
                    success=bool(content),
                    quality=0.9 if content else 0.0,
                    input_tokens=usage["prompt_tokens"],
                    output_tokens=usage["completion_tokens"],
                )
                if content:
                    messages.append({"role": "assistant", "content": content})
                    break
                retries += 1
    print(f"closed {task.task_id}: {task.closed.ledger if task.closed else None}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the router's base URL")
    parser.add_argument("--api-key", help="an API key, if the router requires one")
    args = parser.parse_args()
    with BudgetRouterClient(args.url, api_key=args.api_key) as router:
        run_task(router, "Which of our suppliers raised prices this quarter, and by how much?")


if __name__ == "__main__":
    main()
