"""ID-image storage: the file-store contract, encryption at rest, strict references, sniffing."""

from __future__ import annotations

import re
import secrets
import stat
from pathlib import Path

import pytest

from gridgate.accounts.files import (
    MAX_IMAGE_BYTES,
    DirectoryFileStore,
    FileStore,
    MemoryFileStore,
    check_image,
    sniff_image,
)
from gridgate.settings import decode_key, new_key
from gridgate.storage.crypto import DecryptionError, SecretBox

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + secrets.token_bytes(64)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + secrets.token_bytes(64)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + secrets.token_bytes(64)
GIF = b"GIF89a\x01\x00\x01\x00" + secrets.token_bytes(64)


def _box(*keys: str) -> SecretBox:
    return SecretBox([decode_key(key) for key in keys or (new_key(),)])


@pytest.fixture(params=["memory", "directory", "directory-encrypted"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FileStore:
    """Every implementation, held to the same contract."""
    if request.param == "memory":
        return MemoryFileStore()
    box = _box() if request.param == "directory-encrypted" else None
    return DirectoryFileStore(tmp_path / "files", box)


# --- the contract -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"), [(JPEG, "image/jpeg"), (PNG, "image/png"), (WEBP, "image/webp")]
)
async def test_round_trip(store: FileStore, data: bytes, content_type: str) -> None:
    ref = await store.put(data, content_type=content_type, owner="acc-1")
    assert await store.get(ref) == (data, content_type)


async def test_each_put_gets_its_own_reference(store: FileStore) -> None:
    first = await store.put(JPEG, content_type="image/jpeg", owner="acc-1")
    second = await store.put(PNG, content_type="image/png", owner="acc-1")
    assert first != second
    assert await store.get(first) == (JPEG, "image/jpeg")
    assert await store.get(second) == (PNG, "image/png")


async def test_delete_is_final_and_idempotent(store: FileStore) -> None:
    ref = await store.put(PNG, content_type="image/png", owner="acc-1")
    await store.delete(ref)
    await store.delete(ref)
    with pytest.raises(FileNotFoundError):
        await store.get(ref)


async def test_unknown_content_types_are_refused(store: FileStore) -> None:
    with pytest.raises(ValueError, match="cannot store"):
        await store.put(b"#!/bin/sh\n", content_type="application/x-sh", owner="acc-1")


# --- the directory store ----------------------------------------------------------------------


async def test_plain_files_are_private_and_dated(tmp_path: Path) -> None:
    store = DirectoryFileStore(tmp_path / "files")
    ref = await store.put(JPEG, content_type="image/jpeg", owner="acc-1")
    assert re.fullmatch(r"[0-9]{4}/[0-9]{2}/[0-9a-f]{32}\.jpg", ref)
    path = tmp_path / "files" / ref
    assert path.read_bytes() == JPEG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert "acc-1" not in ref


async def test_encrypted_files_do_not_hold_the_image(tmp_path: Path) -> None:
    store = DirectoryFileStore(tmp_path / "files", _box())
    ref = await store.put(PNG, content_type="image/png", owner="acc-1")
    on_disk = (tmp_path / "files" / ref).read_bytes()
    assert on_disk != PNG
    assert PNG[16:48] not in on_disk
    assert not on_disk.startswith(b"\x89PNG")
    assert stat.S_IMODE((tmp_path / "files" / ref).stat().st_mode) == 0o600
    assert await store.get(ref) == (PNG, "image/png")


async def test_encrypted_files_open_after_a_key_rotation(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    ref = await DirectoryFileStore(tmp_path, _box(old)).put(
        WEBP, content_type="image/webp", owner="acc-1"
    )
    assert await DirectoryFileStore(tmp_path, _box(new, old)).get(ref) == (WEBP, "image/webp")
    with pytest.raises(DecryptionError):
        await DirectoryFileStore(tmp_path, _box(new)).get(ref)


async def test_an_encrypted_file_copied_over_another_does_not_open(tmp_path: Path) -> None:
    store = DirectoryFileStore(tmp_path, _box())
    mine = await store.put(JPEG, content_type="image/jpeg", owner="acc-1")
    theirs = await store.put(PNG, content_type="image/png", owner="acc-2")
    (tmp_path / mine).write_bytes((tmp_path / theirs).read_bytes())
    with pytest.raises(DecryptionError):
        await store.get(mine)


@pytest.mark.parametrize(
    "ref",
    [
        "../secret.png",
        "/etc/passwd",
        "2024/01/../../../secret.png",
        f"2024/01/{'a' * 32}.png/../../../../secret.png",
        f"2024/01/{'a' * 32}.png\n",
        f"2024/01/{'A' * 32}.png",
        f"2024/13/{'a' * 32}.png",
        f"2024/1/{'a' * 32}.png",
        f"2024/01/{'a' * 31}.png",
        f"2024/01/{'a' * 32}.exe",
        f"2024\\01\\{'a' * 32}.png",
        f"./2024/01/{'a' * 32}.png",
        "",
    ],
)
async def test_references_it_did_not_make_are_refused(tmp_path: Path, ref: str) -> None:
    (tmp_path / "secret.png").write_bytes(PNG)
    store = DirectoryFileStore(tmp_path / "files")
    with pytest.raises(ValueError, match="not a reference"):
        await store.get(ref)
    with pytest.raises(ValueError, match="not a reference"):
        await store.delete(ref)
    assert (tmp_path / "secret.png").read_bytes() == PNG


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"), [(JPEG, "image/jpeg"), (PNG, "image/png"), (WEBP, "image/webp")]
)
def test_images_are_told_by_their_bytes(data: bytes, content_type: str) -> None:
    assert sniff_image(data) == content_type
    assert check_image(data) == content_type


@pytest.mark.parametrize(
    "data",
    [
        GIF,
        b"just some text, claiming to be image/jpeg",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # RIFF, but audio
        b"\x89PNG\r\n",  # a truncated signature
        b"%PDF-1.7\n",
        b"\xff\xd8",
    ],
)
def test_other_content_is_not_an_image(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a JPEG, PNG or WebP image"):
        sniff_image(data)
    with pytest.raises(ValueError, match="not a JPEG, PNG or WebP image"):
        check_image(data)


def test_size_limits() -> None:
    with pytest.raises(ValueError, match="empty"):
        check_image(b"")
    largest = JPEG + bytes(MAX_IMAGE_BYTES - len(JPEG))
    assert check_image(largest) == "image/jpeg"
    with pytest.raises(ValueError, match="larger than 5 MiB"):
        check_image(largest + b"\x00")
