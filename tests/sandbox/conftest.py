"""One sandbox per test module, served over real HTTP, reset before every test.

A module may override `sandbox_config` to run its sandbox with other settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from kaspro_sandbox import RunningSandbox, SandboxConfig, start_sandbox

from .callback_receiver import CallbackReceiver
from .partner_client import FakeClock, MoneyPartner, Partner

SEED = 7


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def sandbox_config(clock: FakeClock) -> SandboxConfig:
    return SandboxConfig(seed=SEED, clock=clock)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(sandbox_config: SandboxConfig) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox(sandbox_config)
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(sandbox: RunningSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=5.0) as client:
        yield client


@pytest.fixture
def partner(sandbox: RunningSandbox, http: httpx.AsyncClient, clock: FakeClock) -> Partner:
    sandbox.state.reset()
    clock.offset = 0.0
    return Partner(http, clock)


@pytest.fixture
def money(partner: Partner) -> MoneyPartner:
    """The partner with money calls, on a freshly reset sandbox."""
    return MoneyPartner(partner.http, partner.clock)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def receiver() -> AsyncIterator[CallbackReceiver]:
    running = CallbackReceiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def hooked(
    money: MoneyPartner, receiver: CallbackReceiver, sandbox: RunningSandbox
) -> CallbackReceiver:
    """A clean receiver that the freshly reset sandbox calls back (one per module)."""
    receiver.clear()
    sandbox.state.callback_url = receiver.url
    return receiver
