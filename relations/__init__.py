"""relations (see docs/architecture.md)."""
