"""A LangGraph agent whose every node calls its model through budget-router's proxy.

Each node is a ``ChatOpenAI`` pointed at the router (``/v1/chat/completions``) with headers that
name the task and the node's step kind and type; the router picks the model per call, caps its
output at the budget's grant and books the provider's usage. Needs ``pip install langgraph
langchain-openai`` (not dependencies of budget-router) and a router with provider endpoints:

    BUDGET_ROUTER_PROVIDERS='{"openai": {"base_url": "https://YOUR-PROVIDER/v1",
                              "api_key": "sk-..."}}' budget-router up
    python examples/langgraph_proxy.py --url http://127.0.0.1:8080 --key BUDGET_ROUTER_KEY
"""

from __future__ import annotations

import argparse
from typing import Any, TypedDict

import httpx

BUDGET = {
    "total_dollars": 0.25,
    "max_input_tokens": 100_000,
    "max_output_tokens": 8_000,
    "reserve_for_final_synthesis": 0.05,
    "reserve_for_human_handoff": 0.0,
    "hard_stop_after_retries": 2,
}
NODES = [  # (node name, step kind, step type, the instruction the node adds)
    ("plan", "control", "planning", "Plan, in three short steps, how to answer the question."),
    ("research", "execution", "extraction", "Carry out the plan; list the facts you rely on."),
    ("check", "verification", "self_check", "Check the facts above; point out any mistake."),
    ("answer", "final_synthesis", "answer", "Write the final answer in one paragraph."),
]


class State(TypedDict):
    question: str
    notes: list[str]


def node_headers(task_id: str, kind: str, step_type: str) -> dict[str, str]:
    """The headers that tell the router which task and which kind of step a call is."""
    return {
        "X-Budget-Router-Task": task_id,
        "X-Budget-Router-Step-Kind": kind,
        "X-Budget-Router-Step-Type": step_type,
    }


def build_graph(url: str, key: str, task_id: str) -> Any:
    """A linear graph plan -> research -> check -> answer, every node through the proxy."""
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(State)
    previous = START
    for name, kind, step_type, instruction in NODES:
        llm = ChatOpenAI(
            model="routed-by-budget-router",  # the router replaces it with its choice
            base_url=f"{url}/v1",
            api_key=key,
            default_headers=node_headers(task_id, kind, step_type),
            max_tokens=1_000,  # a ceiling; the router caps it further at the step's grant
        )

        def run(state: State, llm: Any = llm, instruction: str = instruction) -> dict:
            prompt = "\n\n".join([state["question"], *state["notes"], instruction])
            reply = llm.invoke(prompt)
            return {"notes": [*state["notes"], str(reply.content)]}

        graph.add_node(name, run)
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key", required=True, help="a budget-router API key")
    parser.add_argument("--question", default="Why do agents overspend on LLM calls?")
    args = parser.parse_args()
    auth = {"Authorization": f"Bearer {args.key}"}
    task = httpx.post(
        f"{args.url}/v1/tasks", json={"task_type": "research", "budget": BUDGET}, headers=auth
    ).json()
    result = build_graph(args.url, args.key, task["task_id"]).invoke(
        {"question": args.question, "notes": []}
    )
    print(result["notes"][-1])
    closed = httpx.post(
        f"{args.url}/v1/tasks/{task['task_id']}/close",
        json={"success": True, "quality": 0.8},
        headers=auth,
    ).json()
    print("ledger:", closed["ledger"])


if __name__ == "__main__":
    main()
