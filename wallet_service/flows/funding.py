"""Top-up and driver-deposit instructions for a registered customer."""

from __future__ import annotations

from wallet_service.domain.funding import Instructions, RetailPrefix, VaPrefix, instructions
from wallet_service.domain.phone import MobileNumber
from wallet_service.flows.onboarding import Onboarding


class Funding:
    def __init__(
        self,
        onboarding: Onboarding,
        *,
        va: tuple[VaPrefix, ...],
        retail: tuple[RetailPrefix, ...],
        driver_va: tuple[VaPrefix, ...],
        driver_retail: tuple[RetailPrefix, ...],
    ) -> None:
        self._onboarding = onboarding
        self._user = (va, retail)
        self._driver = (driver_va, driver_retail)

    async def instructions(
        self, mobile: MobileNumber, *, driver: bool, timeout: float | None
    ) -> Instructions:
        # Only a KasPro customer can be paid into: NOT_FOUND otherwise.
        await self._onboarding.available_balance(mobile, timeout=timeout)
        va, retail = self._driver if driver else self._user
        return instructions(mobile, va, retail)
