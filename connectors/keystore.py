"""The control plane's Ed25519 signing key, kept as PEM files in a directory.

``signing.key`` (PKCS#8, mode 0600) is made on first use; ``signing.pub`` is what agents pin
(given to them at enrollment, or copied by hand). The key id is the first 16 hex digits of the
SHA-256 of the raw public key, so agents and operators can tell keys apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from connectors.errors import ConnectorError


class KeyStoreError(ConnectorError):
    """A key file is missing, unreadable or not an Ed25519 key."""


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    key_id: str

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_pem(self) -> str:
        return public_pem(self.public)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_or_create(directory: Path) -> SigningKey:
    """The key in ``directory``, made (with its .pub beside it) when there is none."""
    path = directory / "signing.key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        (directory / "signing.pub").write_text(public_pem(private.public_key()))
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyStoreError(f"{path} is not an Ed25519 private key")
    return SigningKey(loaded, key_id(loaded.public_key()))


def load_public(pem: str | bytes) -> Ed25519PublicKey:
    """A pinned public key from its PEM text."""
    try:
        public = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as exc:
        raise KeyStoreError(f"not a PEM public key: {exc}") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise KeyStoreError("the pinned key is not an Ed25519 public key")
    return public
