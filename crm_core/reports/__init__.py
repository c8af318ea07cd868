"""Supervisor reports over the call log, the agent state history and the callback queue: agent
performance, callback SLA and the hourly heat map, each as a table, JSON, CSV or XLSX.

All aggregation runs in SQL that works on SQLite and PostgreSQL; local days and hours follow
settings.timezone (see `buckets`)."""
