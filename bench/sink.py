"""A minimal OTLP/HTTP trace sink (``python -m bench.sink --port N``): accepts every export with
200 and counts requests and bytes (``GET /stats``), so Storefront pays the real cost of
exporting while the collector itself costs next to nothing."""

from __future__ import annotations

import argparse
import asyncio

import orjson

_stats = {"exports": 0, "bytes": 0}


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            if request_line.startswith("GET /stats"):
                payload = orjson.dumps(_stats)
                content_type = b"application/json"
            else:
                _stats["exports"] += 1
                _stats["bytes"] += len(body)
                payload = b""  # an empty ExportTraceServiceResponse: everything accepted
                content_type = b"application/x-protobuf"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type
                + b"\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )  # fmt: skip
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _serve(host: str, port: int) -> None:
    server = await asyncio.start_server(_handle, host, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
