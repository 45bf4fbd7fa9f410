"""Tests of the benchmark harness (its arithmetic and a smoke run; nothing here times anything)."""
