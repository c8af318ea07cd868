"""Alembic migrations for every table; run with `cti db upgrade` (idempotent)."""
