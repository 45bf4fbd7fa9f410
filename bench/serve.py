"""Serve one benchmarked app (``python -m bench.serve bare|article|storefront --port N``) with
the uvicorn settings of ``storefront api``, so all three differ only in the app itself."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI


def _factories() -> dict[str, Callable[[], FastAPI]]:
    def bare() -> FastAPI:
        from bench.apps.bare import create_app

        return create_app()

    def article() -> FastAPI:
        from bench.apps.article import create_app

        return create_app()

    def storefront() -> FastAPI:
        from service.main import create_app

        return create_app()

    return {"bare": bare, "article": article, "storefront": storefront}


def main(argv: list[str] | None = None) -> None:
    factories = _factories()
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("app", choices=sorted(factories))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Mirrors service/cli.py `api`: one process, uvloop/httptools when installed (uvicorn's
    # "auto"), no access log, no proxy headers, no server header, our own logging config.
    uvicorn.run(
        factories[args.app](),
        host=args.host,
        port=args.port,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
