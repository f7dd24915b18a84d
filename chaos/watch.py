"""A WatchEvents consumer that behaves like a real one: it follows the stream, and when the
service dies it reconnects from the last sequence it saw. With several replicas it
follows one, and reconnects to the next when its stream breaks (its replica was killed):
every replica's events must reach it through whichever one it is on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from wallet.v1 import transaction_service_pb2, transaction_service_pb2_grpc

from chaos.stack import TOKENS
from chaos.workload import CHANNEL_OPTIONS


@dataclass
class Watcher:
    targets: list[str]
    # Every event as it arrived: (sequence, event_id), duplicates included.
    arrived: list[tuple[int, str]] = field(default_factory=list)
    connections: int = 0
    # Connections per target (index).
    followed: list[int] = field(default_factory=list)
    last: int = 0
    gaps: list[str] = field(default_factory=list)
    disorder: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        metadata = (("authorization", f"Bearer {TOKENS['dispatch']}"),)
        self.followed = [0] * len(self.targets)
        on = 0
        while not stop.is_set():
            self.connections += 1
            self.followed[on] += 1
            target = self.targets[on]
            async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
                stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
                stream = stub.WatchEvents(
                    transaction_service_pb2.WatchEventsRequest(after_sequence=self.last),
                    metadata=metadata,
                )
                previous = self.last
                try:
                    async for response in stream:
                        self._see(response.event.sequence, response.event.event_id, previous)
                        previous = response.event.sequence
                except grpc.aio.AioRpcError:
                    pass
                finally:
                    stream.cancel()
            if not stop.is_set():
                on = (on + 1) % len(self.targets)
                await asyncio.sleep(0.2)

    def _see(self, sequence: int, event_id: str, previous: int) -> None:
        self.arrived.append((sequence, event_id))
        if sequence <= previous:
            self.disorder.append(f"sequence {sequence} after {previous} on one stream")
        if sequence > self.last + 1:
            self.gaps.append(f"jumped from {self.last} to {sequence}")
        self.last = max(self.last, sequence)
