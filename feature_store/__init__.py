"""DuckDB feature store for logged decisions, outcomes and rolling features."""
