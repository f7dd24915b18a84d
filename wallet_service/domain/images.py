"""eKYC images: what the service accepts before passing them to KasPro."""

from __future__ import annotations

MAX_IMAGE_BYTES = 5 * 1024 * 1024

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"


def image_problem(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES) -> str | None:
    """Why ``data`` is not an acceptable KTP/selfie photo, or None."""
    if not data:
        return "is required"
    if len(data) > max_bytes:
        return f"must be at most {max_bytes} bytes (got {len(data)})"
    if not (data.startswith(_JPEG) or data.startswith(_PNG)):
        return "must be a JPEG or PNG image"
    return None
