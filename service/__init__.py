"""Storefront service: the FastAPI application, its domain logic and its command line."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("storefront")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
