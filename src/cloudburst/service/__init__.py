"""Core services: the use cases the API and CLI call (one module per pool)."""
