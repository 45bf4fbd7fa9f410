"""Logs, metrics and traces, all keyed by request ID."""
