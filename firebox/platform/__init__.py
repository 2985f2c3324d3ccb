"""Platform services: accounts, API keys, rate limits, usage records, Prometheus metrics (SQL via
SQLAlchemy; no torch, no HTTP). `services.Platform.open()` builds them all at start-up."""
