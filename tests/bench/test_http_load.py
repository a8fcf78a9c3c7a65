"""The load generator spreads its connections over several ports (router replicas)."""

import asyncio
from collections import Counter

from bench.http_load import closed_loop, post_json

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


def test_closed_loop_spreads_connections_over_the_ports() -> None:
    connections: Counter[str] = Counter()
    answered: Counter[str] = Counter()

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections[name] += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    answered[name] += 1
                    writer.write(RESPONSE)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        return handle

    async def main() -> None:
        servers = [await asyncio.start_server(handler(n), "127.0.0.1", 0) for n in "ab"]
        ports = [server.sockets[0].getsockname()[1] for server in servers]
        await closed_loop(
            "127.0.0.1", ports, [post_json("/v1/decide", b"{}")], concurrency=4, duration_s=0.3
        )
        for server in servers:
            server.close()

    asyncio.run(main())
    assert connections == {"a": 2, "b": 2}
    assert answered["a"] > 0 and answered["b"] > 0
