"""The process's file descriptors: the HTTP port's cap must leave room for the rest.

Every connection holds a descriptor, all from one budget (RLIMIT_NOFILE) that the gRPC
port, the KasPro client's pool, the database and the logs share. A flood on the HTTP
port must meet that port's own cap (``WALLET_HTTP_MAX_CONNECTIONS``) long before it can
leave the gRPC port unable to accept a connection (docs/operations.md, "The callback
port").
"""

from __future__ import annotations

import contextlib
import resource

from wallet_service.config import Config, ConfigError

# Kept for what has no cap of its own here: gRPC connections, the database and its WAL,
# the listening sockets, log files, and in development the embedded sandbox's side of
# the KasPro connections.
RESERVED = 1024


def needed(config: Config) -> int:
    return config.http_max_connections + config.kaspro_max_connections + RESERVED


def raise_open_file_limit(target: int) -> int:
    """Raise the soft open-file limit to the hard one (to ``target`` when the hard one is
    unlimited, which the kernel does not accept as a soft limit); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, target)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        # Refused (a container's cap): the budget check says what does not fit.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def check_budget(config: Config, limit: int) -> None:
    """Refuse a configuration whose connections cannot all be open at once."""
    need = needed(config)
    if limit != resource.RLIM_INFINITY and need > limit:
        raise ConfigError(
            f"WALLET_HTTP_MAX_CONNECTIONS ({config.http_max_connections}) + "
            f"WALLET_KASPRO_MAX_CONNECTIONS ({config.kaspro_max_connections}) + {RESERVED} "
            f"descriptors kept for gRPC, the database and logs = {need}, more than this "
            f"process may open ({limit}, RLIMIT_NOFILE): lower WALLET_HTTP_MAX_CONNECTIONS "
            "or raise the limit"
        )


def reserve(config: Config) -> None:
    """At start-up: take all the descriptors the system allows, and check they suffice."""
    check_budget(config, raise_open_file_limit(needed(config)))
