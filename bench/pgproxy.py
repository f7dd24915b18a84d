"""A TCP proxy in front of PostgreSQL that counts what clients send, for the round trips
per operation of ``make bench STORE=postgres`` (its counting runs, never its timed ones).

Every message a client sends after its startup packet is framed as a type byte and a
length (PostgreSQL's protocol, version 3); the proxy counts them by type and passes the
bytes on unchanged. A client waits for the server's ReadyForQuery after each Sync ('S',
the end of an extended-protocol exchange) and each simple Query ('Q'): their sum is the
number of round trips. Parse ('P') counts statements prepared, Execute ('E') and Query
the statements run, each also counted by its SQL text (a Bind names the statement a
Parse prepared on that connection). Connections must not use TLS (``sslmode=disable``):
the proxy reads the messages in clear.

An ErrorResponse from the server is counted by its SQLSTATE, its message and the
statement it answered (40001: refused for a serialization conflict). A connection to
``--report-port`` answers the counts so far as one JSON line:
``{"messages": {type: n}, "statements": {sql: n}, "errors": {"code (message) sql": n}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
from collections import Counter

from bench import procs

counts: Counter[str] = Counter()
statements: Counter[str] = Counter()
# "SQLSTATE (message) statement": errors the server answered, by the statement answered.
errors: Counter[str] = Counter()


def _cstrings(body: bytes, n: int) -> list[str]:
    """The first ``n`` NUL-terminated strings of a message's body."""
    return [part.decode(errors="replace") for part in body.split(b"\0", n)[:n]]


async def _message(reader: asyncio.StreamReader) -> tuple[bytes, str, bytes]:
    """One typed message: its header (type and length) as read, its type, its body."""
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!i", header[1:])
    return header, chr(header[0]), await reader.readexactly(length - 4)


class Connection:
    """One client's connection, passed through both ways and counted."""

    def __init__(self) -> None:
        self.prepared: dict[str, str] = {}  # statements prepared, by name
        self.running = ""  # the statement last sent

    async def from_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The startup packet (no type byte), then typed messages."""
        try:
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            writer.write(struct.pack("!i", length) + await reader.readexactly(length - 4))
            counts["connections"] += 1
            while True:
                header, kind, body = await _message(reader)
                writer.write(header + body)
                counts[kind] += 1
                if kind == "P":
                    name, sql = _cstrings(body, 2)
                    self.prepared[name] = sql
                elif kind == "B":
                    self.running = self.prepared.get(_cstrings(body, 2)[1], "?")
                    statements[self.running] += 1
                elif kind == "Q":
                    self.running = _cstrings(body, 1)[0]
                    statements[self.running] += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def from_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Typed messages; an ErrorResponse is counted with the statement it answers."""
        try:
            while True:
                header, kind, body = await _message(reader)
                writer.write(header + body)
                if kind == "E":
                    fields = {f[:1]: f[1:] for f in body.split(b"\0") if f}
                    code = fields.get(b"C", b"?").decode()
                    # 40001's message tells a write on the same row ("due to concurrent
                    # update") from SSI's read/write dependencies.
                    message = fields.get(b"M", b"").decode(errors="replace")
                    errors[f"{code} ({message}) {' '.join(self.running.split())}"] += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(listen: int, upstream: tuple[str, int], report: int) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*upstream)
        connection = Connection()
        await asyncio.gather(
            connection.from_client(reader, server_writer),
            connection.from_server(server_reader, writer),
        )

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        said = {"messages": counts, "statements": statements, "errors": errors}
        writer.write(json.dumps(said).encode() + b"\n")
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(client, "127.0.0.1", listen)
    reporter = await asyncio.start_server(answer, "127.0.0.1", report)
    async with proxy, reporter:
        await procs.until_stopped()


def read_counts(report_port: int) -> dict[str, Counter[str]]:
    """The proxy's counts so far: ``messages`` by type (and ``connections``),
    ``statements`` by SQL, ``errors`` by SQLSTATE and statement."""

    async def ask() -> dict[str, Counter[str]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", report_port)
        said = json.loads(await reader.readline())
        writer.close()
        return {kind: Counter(said[kind]) for kind in ("messages", "statements", "errors")}

    return asyncio.run(ask())


def round_trips(counted: Counter[str]) -> int:
    return counted["S"] + counted["Q"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of the server")
    parser.add_argument("--report-port", type=int, required=True)
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    asyncio.run(serve(args.port, (host, int(port)), args.report_port))


if __name__ == "__main__":
    main()
