"""Storage of uploaded files such as ID-card images (身份证照片) behind the ``FileStore`` interface.

ID images are sensitive personal information (PIPL art. 28): the directory store encrypts them
when given a :class:`~gridgate.storage.crypto.SecretBox`, keeps them readable by the service
user only, and accepts only references it made itself. Image types are told from the bytes,
never from what the client declares.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from gridgate.accounts.interfaces import FileStore
from gridgate.storage.crypto import SecretBox

__all__ = [
    "MAX_IMAGE_BYTES",
    "DirectoryFileStore",
    "FileStore",
    "MemoryFileStore",
    "check_image",
    "sniff_image",
]

MAX_IMAGE_BYTES: Final = 5 * 1024 * 1024

_JPEG: Final = b"\xff\xd8\xff"
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_EXTENSIONS: Final = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
_TYPES: Final = {ext: content_type for content_type, ext in _EXTENSIONS.items()}
# The only references the directory store accepts: no "..", no absolute paths, no other files.
_REF: Final = re.compile(r"[0-9]{4}/(?:0[1-9]|1[0-2])/[0-9a-f]{32}\.(?:jpg|png|webp)")
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


def sniff_image(data: bytes) -> str:
    """The content type of a JPEG, PNG or WebP image, told from its first bytes."""
    if data.startswith(_JPEG):
        return "image/jpeg"
    if data.startswith(_PNG):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("not a JPEG, PNG or WebP image")


def check_image(data: bytes) -> str:
    """The content type of an uploaded image; ValueError if empty, too large or not an image."""
    if not data:
        raise ValueError("the image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    return sniff_image(data)


def _extension(content_type: str) -> str:
    try:
        return _EXTENSIONS[content_type]
    except KeyError:
        raise ValueError(f"cannot store files of type {content_type!r}") from None


class MemoryFileStore:
    """Files kept in memory, for tests and throwaway runs."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] = {}

    async def put(self, data: bytes, *, content_type: str, owner: str) -> str:
        """Keep a copy of ``data``; ``owner`` is not needed to find it again."""
        ref = f"{secrets.token_hex(16)}.{_extension(content_type)}"
        self._files[ref] = (bytes(data), content_type)
        return ref

    async def get(self, ref: str) -> tuple[bytes, str]:
        """The stored bytes and content type."""
        try:
            return self._files[ref]
        except KeyError:
            raise FileNotFoundError("no stored file with this reference") from None

    async def delete(self, ref: str) -> None:
        """Forget ``ref``."""
        self._files.pop(ref, None)


class DirectoryFileStore:
    """Files under ``root/YYYY/MM/``, mode 0600, encrypted with ``box`` when one is given."""

    def __init__(self, root: Path, box: SecretBox | None = None) -> None:
        self.root = root
        self._box = box

    def _path(self, ref: str) -> Path:
        match = _REF.fullmatch(ref)
        if match is None:
            raise ValueError("not a reference made by this file store")
        return self.root / ref

    @staticmethod
    def _purpose(ref: str) -> str:
        # Binding the ciphertext to its reference: a file copied over another one does not open.
        return f"accounts.file:{ref}"

    async def put(self, data: bytes, *, content_type: str, owner: str) -> str:
        """Write ``data`` to a new file; ``owner`` stays on the caller's row, not in the path."""
        now = datetime.now(UTC)
        ref = f"{now:%Y}/{now:%m}/{secrets.token_hex(16)}.{_extension(content_type)}"
        await asyncio.to_thread(self._write, ref, data)
        return ref

    def _write(self, ref: str, data: bytes) -> None:
        path = self._path(ref)
        for directory in (self.root, path.parent.parent, path.parent):
            directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        payload = data
        if self._box is not None:
            # SecretBox seals text: base64 costs a third more disk, and keeps key rotation and
            # the key-id format of every other sealed value.
            text = base64.b64encode(data).decode("ascii")
            payload = self._box.seal(text, self._purpose(ref)).encode("ascii")
        # O_EXCL: never overwrite, never follow a planted symlink; the mode is set at creation
        # so the file is not readable by others even for a moment.
        # (O_BINARY exists on Windows only, where it stops newline translation.)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags, _FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def get(self, ref: str) -> tuple[bytes, str]:
        """The stored bytes (decrypted) and content type; DecryptionError if altered."""
        path = self._path(ref)
        content_type = _TYPES[ref.rsplit(".", 1)[1]]
        payload = await asyncio.to_thread(path.read_bytes)
        if self._box is None:
            return payload, content_type
        text = self._box.open(payload.decode("ascii", errors="replace"), self._purpose(ref))
        return base64.b64decode(text, validate=True), content_type

    async def delete(self, ref: str) -> None:
        """Remove the file of ``ref`` if it is still there."""
        await asyncio.to_thread(self._path(ref).unlink, missing_ok=True)
