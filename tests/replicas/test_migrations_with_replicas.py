"""Replicas starting together on an empty database migrate it once (an advisory lock);
a replica refuses to start on a schema newer than it knows."""

from __future__ import annotations

import asyncio

from wallet_service.store.database import latest_version, migrations

from .harness import Cluster, log_records

MOBILE = "081234567890"


async def test_three_replicas_starting_together_migrate_once(stack: Cluster) -> None:
    replicas = await stack.start_replicas(3)

    records = [log_records(r) for r in replicas]
    applied = sorted(
        record["msg"]
        for log in records
        for record in log
        if record["msg"].startswith("applied database migration")
    )
    versions = [version for version, _ in migrations("postgresql")]
    assert applied == [f"applied database migration {v:04d}" for v in versions]
    for replica, log in zip(replicas, records, strict=True):
        assert any(r["msg"].startswith("wallet service serving") for r in log), replica.name
        assert [r for r in log if r["level"] in ("ERROR", "CRITICAL")] == [], replica.name
    rows = await stack.db.fetch("SELECT version FROM schema_version")
    assert [row["version"] for row in rows] == [latest_version("postgresql")]

    # One schema, one set of books: registered at one replica, seen from the others.
    await replicas[0].register(MOBILE)
    for replica in replicas[1:]:
        account = await replica.get_account(MOBILE)
        assert account.mobile_number == "+6281234567890"


async def test_a_replica_refuses_a_schema_newer_than_it_knows(stack: Cluster) -> None:
    await stack.start_replicas(1)
    known = latest_version("postgresql")
    await stack.db.execute("UPDATE schema_version SET version = $1", known + 1)

    late = stack.spawn_replica()
    code = await asyncio.to_thread(late.process.popen.wait, 60)

    assert code > 0
    output = late.log()
    assert f"schema is version {known + 1}, newer than this release knows ({known})" in output
    assert "Traceback" not in output, output
    assert await stack.db.fetchval("SELECT version FROM schema_version") == known + 1
