"""Encryption of secrets and personal data at rest (AES-256-GCM, keys from settings).

A sealed value reads ``v1.<key id>.<base64 nonce+ciphertext>``. The key id lets the data key
be rotated: new values use the current key, old ones still open with a previous key. The
associated data binds a ciphertext to its purpose (``channel.secret`` …) so a value copied
into another column does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DecryptionError", "SecretBox"]

_VERSION = "v1"
_NONCE_BYTES = 12


class DecryptionError(Exception):
    """A sealed value that no configured key opens (wrong key, tampered, wrong purpose)."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"gridgate-key-id" + key).hexdigest()[:8]


class SecretBox:
    """Seals and opens short secrets with the current data key and accepts older ones."""

    def __init__(self, keys: list[bytes], *, lookup_key: bytes | None = None) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        self._current = keys[0]
        self._current_id = _key_id(keys[0])
        self._by_id = {_key_id(key): AESGCM(key) for key in keys}
        # Look-up hashes find rows (a phone, an ID number) and must survive a rotation of the
        # data key, so they have a key of their own; without one, derive it from the data key
        # (then rotating the data key means re-hashing every look-up column).
        base = lookup_key if lookup_key is not None else keys[0]
        self._hash_key = hmac.new(base, b"gridgate-lookup-hash", hashlib.sha256).digest()

    def seal(self, plaintext: str, purpose: str) -> str:
        """Encrypt ``plaintext`` for storage; ``purpose`` must be given again to open it."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._by_id[self._current_id].encrypt(
            nonce, plaintext.encode("utf-8"), purpose.encode()
        )
        payload = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{_VERSION}.{self._current_id}.{payload}"

    def open(self, sealed: str, purpose: str) -> str:
        """Decrypt a value made by :meth:`seal` with the same ``purpose``."""
        try:
            version, key_id, payload = sealed.split(".", 2)
            cipher = self._by_id[key_id]
            raw = base64.urlsafe_b64decode(payload)
        except (ValueError, KeyError) as exc:
            raise DecryptionError("no configured key opens this value") from exc
        if version != _VERSION:
            raise DecryptionError(f"unknown format {version!r}")
        try:
            plain = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode())
        except InvalidTag as exc:
            raise DecryptionError("value was tampered with or sealed for another purpose") from exc
        return plain.decode("utf-8")

    def needs_reseal(self, sealed: str) -> bool:
        """True when ``sealed`` was made with an older key."""
        return not sealed.startswith(f"{_VERSION}.{self._current_id}.")

    def lookup_hash(self, value: str, purpose: str) -> str:
        """A keyed hash for finding a row by an encrypted value without decrypting all rows."""
        return hmac.new(self._hash_key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()
