"""The ceiling: a bare grpc.aio server answering one unary method with fixed bytes.

Same server options as the wallet service, and a response the size of a GetAccount
answer, so the difference to the service is the service's own work.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from bench import procs
from bench.messages import ACCOUNT_RESPONSE_BYTES

METHOD_SERVICE = "bench.Echo"


async def serve(port: int) -> None:
    async def call(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return ACCOUNT_RESPONSE_BYTES

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 21 * 1024 * 1024),
            ("grpc.max_send_message_length", 21 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                METHOD_SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(call)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await procs.until_stopped()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args.port))
    else:
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
