"""The idempotency identity of a mutating RPC: caller, method, request_id and the request's
fingerprint (flows/idempotency.py runs the RPC once per identity)."""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

from wallet_service.api.auth import current_caller
from wallet_service.flows.idempotency import Request


def keyed(method: str, request: Message, request_id: str) -> Request:
    return Request(
        caller=current_caller.get().name,
        method=method,
        request_id=request_id,
        request_hash=hashlib.sha256(request.SerializeToString(deterministic=True)).digest(),
    )
