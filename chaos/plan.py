"""The seeded workload: customers and the list of scenarios, drawn from ``random.Random(seed)``.

The plan is the same for a seed on every run; which caller runs which scenario when,
and so how they interleave with faults and kills, depends on timing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MERCHANTS = ("WARUNG BU SITI", "TOKO KOPI SENJA", "BAKSO PAK KUMIS", "APOTEK SEHAT", "SATE MADURA")
BANK_CODES = ("014", "008", "009", "002")


@dataclass(frozen=True)
class Customers:
    passengers: tuple[str, ...]
    drivers: tuple[str, ...]

    @property
    def everyone(self) -> tuple[str, ...]:
        return self.passengers + self.drivers


@dataclass(frozen=True)
class Ride:
    n: int
    ride_id: str
    passenger: str
    driver: str
    held_idr: int
    fare_idr: int
    fee_idr: int
    ending: str  # capture | void | abandon (left for the hold's expiry)
    tip_idr: int  # 0: no tip

    @property
    def ops(self) -> int:
        return 1 + (self.ending != "abandon") + (self.tip_idr > 0)


@dataclass(frozen=True)
class Transfer:
    n: int
    source: str
    target: str
    amount_idr: int

    ops = 1


@dataclass(frozen=True)
class CashOut:
    n: int
    mobile: str
    amount_idr: int
    bank_code: str  # "" for a retail cash-out
    account_number: str
    outlet: str  # ALFAMART | INDOMARET for retail, else ""

    ops = 1


@dataclass(frozen=True)
class Qris:
    n: int
    mobile: str
    merchant: str
    amount_idr: int
    dynamic: bool

    ops = 1


@dataclass(frozen=True)
class TopUp:
    n: int
    mobile: str
    driver: bool
    amount_idr: int
    channel: str  # VA | ALFAMART | INDOMARET

    ops = 1


Scenario = Ride | Transfer | CashOut | Qris | TopUp


def customers(seed: int, ops: int) -> Customers:
    passengers = max(8, min(40, ops // 50))
    drivers = max(4, passengers // 2)
    tag = seed % 100
    return Customers(
        passengers=tuple(f"0813{tag:02d}{i:06d}" for i in range(passengers)),
        drivers=tuple(f"0815{tag:02d}{i:06d}" for i in range(drivers)),
    )


def _thousands(rng: random.Random, low: int, high: int) -> int:
    return rng.randint(low // 1000, high // 1000) * 1000


def scenarios(seed: int, ops: int, people: Customers) -> list[Scenario]:
    """Scenarios until they would hold at least ``ops`` money operations if every step
    succeeded (callers stop at the run's count; see Callers.run)."""
    rng = random.Random(seed)
    found: list[Scenario] = []
    total = 0
    n = 0
    while total < ops:
        n += 1
        roll = rng.random()
        scenario: Scenario
        if roll < 0.45:
            held = _thousands(rng, 10_000, 80_000)
            fare = max(1000, held - _thousands(rng, 0, 15_000))
            ending = rng.choices(("capture", "void", "abandon"), (0.7, 0.2, 0.1))[0]
            scenario = Ride(
                n=n,
                ride_id=f"ride-{seed}-{n}",
                passenger=rng.choice(people.passengers),
                driver=rng.choice(people.drivers),
                held_idr=held,
                fare_idr=fare,
                fee_idr=fare * rng.choice((10, 15, 20)) // 100,
                ending=ending,
                tip_idr=_thousands(rng, 1000, 20_000)
                if ending == "capture" and rng.random() < 0.4
                else 0,
            )
        elif roll < 0.65:
            source = rng.choice(people.everyone)
            target = rng.choice([c for c in people.everyone if c != source])
            scenario = Transfer(n, source, target, _thousands(rng, 1000, 100_000))
        elif roll < 0.78:
            mobile = rng.choice(people.drivers if rng.random() < 0.6 else people.passengers)
            amount = _thousands(rng, 10_000, 120_000)
            if rng.random() < 0.7:
                # An account number ending in 0000 makes the sandbox fail the transfer.
                ending_digits = "0000" if rng.random() < 0.1 else f"{rng.randint(1, 9999):04d}"
                scenario = CashOut(
                    n,
                    mobile,
                    amount,
                    rng.choice(BANK_CODES),
                    f"{rng.randint(100000, 999999)}{ending_digits}",
                    "",
                )
            else:
                scenario = CashOut(n, mobile, amount, "", "", rng.choice(("ALFAMART", "INDOMARET")))
        elif roll < 0.91:
            # A merchant name starting with FAIL makes the sandbox fail the payment.
            merchant = (
                "FAIL " + rng.choice(MERCHANTS) if rng.random() < 0.1 else rng.choice(MERCHANTS)
            )
            scenario = Qris(
                n,
                rng.choice(people.passengers),
                merchant[:25],
                _thousands(rng, 5000, 80_000),
                rng.random() < 0.5,
            )
        else:
            driver = rng.random() < 0.3
            scenario = TopUp(
                n,
                rng.choice(people.drivers if driver else people.passengers),
                driver,
                _thousands(rng, 20_000, 300_000),
                rng.choices(("VA", "ALFAMART", "INDOMARET"), (0.7, 0.15, 0.15))[0],
            )
        found.append(scenario)
        total += scenario.ops
    return found


def kill_points(seed: int, ops: int, kills: int) -> list[int]:
    """After how many finished operations each kill comes (sorted, distinct)."""
    return _points(f"kills-{seed}", ops, kills)


def termination_points(seed: int, ops: int, terminations: int) -> list[int]:
    """After how many finished operations a replica's database connections are ended."""
    return _points(f"terminations-{seed}", ops, terminations)


def _points(name: str, ops: int, count: int) -> list[int]:
    """``count`` distinct operation counts between 5 % and 95 % of ``ops``, sorted."""
    rng = random.Random(name)
    low, high = max(1, ops // 20), max(2, ops * 19 // 20)
    span = range(low, high)
    return sorted(rng.sample(span, min(count, len(span))))
