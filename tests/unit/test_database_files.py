"""Database files: a data directory we create is 0700, the database and its WAL files 0600,
an existing database is tightened at open, an open directory is named in a warning."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from wallet_service.store.sqlite import SqliteDatabase

SUFFIXES = ("", "-wal", "-shm")


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common umask 022, under which files default to 0644 and directories to 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_of(db_path: Path) -> list[Path]:
    return [db_path.with_name(db_path.name + suffix) for suffix in SUFFIXES]


async def write_something(db: SqliteDatabase) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO otp_sends (mobile_number, sent_at) VALUES ('x', 1)")


async def test_a_fresh_path_gets_a_private_directory_and_private_files(tmp_path: Path) -> None:
    db_path = tmp_path / "var" / "wallet.db"

    db = await SqliteDatabase.open_file(str(db_path))
    try:
        await write_something(db)
        # While it is open, the WAL and its index sit beside the database.
        assert mode(db_path.parent) == 0o700
        for path in files_of(db_path):
            assert path.exists(), path.name
            assert mode(path) == 0o600, path.name
    finally:
        await db.close()
    assert mode(db_path) == 0o600


async def test_an_existing_readable_database_and_its_wal_are_tightened_at_open(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "wallet.db"
    # Files left by an earlier version (0644), with the WAL still there as after a crash:
    # another connection keeps them open.
    earlier = sqlite3.connect(db_path, isolation_level=None)
    try:
        earlier.execute("PRAGMA journal_mode = WAL")
        earlier.execute("CREATE TABLE t (x)")
        earlier.execute("INSERT INTO t VALUES (1)")
        for path in files_of(db_path):
            path.chmod(0o644)

        db = await SqliteDatabase.open_file(str(db_path))
        try:
            for path in files_of(db_path):
                assert mode(path) == 0o600, path.name
        finally:
            await db.close()
    finally:
        earlier.close()


async def test_an_open_directory_is_named_in_a_warning_and_left_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o755)

    db = await SqliteDatabase.open_file(str(directory / "wallet.db"))
    await db.close()

    assert mode(directory) == 0o755
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(directory) in message for message in warnings), warnings


async def test_a_private_directory_gets_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)

    db = await SqliteDatabase.open_file(str(directory / "wallet.db"))
    await db.close()

    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
