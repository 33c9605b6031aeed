"""Metrics, health endpoints and structured logs (DESIGN.md §10; docs/operations.md, "Monitoring")."""
