"""The run, Dagster-free: plan, stage, runner, batch, record and what derives from it (ARCHITECTURE.md)."""
