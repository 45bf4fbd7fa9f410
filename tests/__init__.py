"""Storefront test suite."""
