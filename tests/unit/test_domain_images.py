"""eKYC photos: present, not too large, JPEG or PNG by their magic bytes."""

from __future__ import annotations

import pytest

from wallet_service.domain.images import MAX_IMAGE_BYTES, image_problem

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 60


def test_the_default_cap_is_five_megabytes() -> None:
    assert MAX_IMAGE_BYTES == 5 * 1024 * 1024


@pytest.mark.parametrize("data", [JPEG, PNG, b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"])
def test_jpeg_and_png_are_accepted(data: bytes) -> None:
    assert image_problem(data) is None


def test_an_empty_image_is_missing() -> None:
    assert image_problem(b"") == "is required"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GIF89a" + b"\x00" * 10, id="gif"),
        pytest.param(b"RIFF\x00\x00\x00\x00WEBPVP8 ", id="webp"),
        pytest.param(b"%PDF-1.7", id="pdf"),
        pytest.param(b"\xff\xd8", id="truncated-jpeg-magic"),
        pytest.param(b"\x89PNG\r\n", id="truncated-png-magic"),
        pytest.param(b"x" + JPEG, id="jpeg-magic-not-at-start"),
        pytest.param(b"/9j/4AAQSkZJRg==", id="base64-jpeg"),
        pytest.param(b"\x00", id="one-byte"),
    ],
)
def test_other_formats_are_refused(data: bytes) -> None:
    assert image_problem(data) == "must be a JPEG or PNG image"


def test_the_size_cap_is_inclusive() -> None:
    at_cap = JPEG + b"\x00" * (1024 - len(JPEG))
    assert image_problem(at_cap, max_bytes=1024) is None
    assert image_problem(at_cap + b"\x00", max_bytes=1024) == (
        "must be at most 1024 bytes (got 1025)"
    )


def test_the_default_cap_applies() -> None:
    at_cap = PNG + b"\x00" * (MAX_IMAGE_BYTES - len(PNG))
    assert image_problem(at_cap) is None
    assert image_problem(at_cap + b"\x00") == (
        f"must be at most {MAX_IMAGE_BYTES} bytes (got {MAX_IMAGE_BYTES + 1})"
    )


def test_size_is_checked_before_format() -> None:
    assert image_problem(b"GIF89a" * 100, max_bytes=10) == "must be at most 10 bytes (got 600)"
