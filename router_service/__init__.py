"""budget-router: step-level LLM routing for AI agents under explicit per-task budgets."""
