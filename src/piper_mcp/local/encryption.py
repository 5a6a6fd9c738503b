"""Secret values encrypted at rest: AES-256-GCM from `cryptography`, key in its own file.

Each ciphertext's associated data is the id of the secret it belongs to, so
a ciphertext moved to another row does not decrypt. A known value sealed with
the key at `init` tells a wrong key from a damaged row.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from piper_mcp.local.files import write_private_file

NONCE_BYTES = 12
KEY_CHECK_ASSOCIATED_DATA = b"piper-mcp vault key check"
KEY_CHECK_PLAINTEXT = b"this vault's key"


class VaultKeyError(Exception):
    """The key file is missing, unreadable or not the key of this vault."""


class VaultKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise VaultKeyError("the key file does not hold a 256-bit key")
        self._aead = AESGCM(key)

    @classmethod
    def create(cls, path: Path) -> VaultKey:
        key = AESGCM.generate_key(bit_length=256)
        write_private_file(path, base64.b64encode(key) + b"\n")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> VaultKey:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise VaultKeyError(f"the key file {path} is missing") from None
        except OSError as error:
            raise VaultKeyError(f"the key file {path} is unreadable ({error.strerror})") from None
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except ValueError:
            raise VaultKeyError(f"the key file {path} is not a vault key") from None

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """nonce ‖ ciphertext ‖ tag."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, sealed: bytes, associated_data: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise VaultKeyError("a stored secret does not decrypt with this key") from None

    def key_check(self) -> bytes:
        return self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_ASSOCIATED_DATA)

    def verify(self, key_check: bytes) -> None:
        try:
            self.open(key_check, KEY_CHECK_ASSOCIATED_DATA)
        except VaultKeyError:
            raise VaultKeyError("the key file does not belong to this vault") from None
