"""alignment (see docs/architecture.md)."""
