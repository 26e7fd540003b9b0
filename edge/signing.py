"""Ed25519 signatures of bundle manifests (`cryptography`): hashes catch corruption, a
signature catches someone who rewrote the manifest too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Tuple

from .errors import FodError
from .fsutil import atomic_write_bytes


def generate_keypair(out_dir: Path, name: str = "fod_signing") -> Tuple[Path, Path]:
    """Write `<name>.key` (PKCS8 PEM, mode 0600) and `<name>.pub` (PEM); refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not name or name.startswith(".") or Path(name).name != name:
        raise FodError(f"{name!r}: a key pair's name is a plain file name (no folder, no dot)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, no permission, a read-only disk
        raise FodError(f"{out_dir}: cannot make the key folder: {e.strerror or e}") from None
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise FodError(f"{p}: exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The private key is 0600 from its first byte: created with that mode, never widened.
    try:
        fd = os.open(str(key_path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise FodError(f"{key_path}: cannot write the key: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        atomic_write_bytes(pub_path, pub)
    except BaseException as e:
        key_path.unlink()  # nothing half-written: no key without its public half
        if isinstance(e, OSError):
            raise FodError(f"{out_dir}: cannot write the key pair: {e.strerror or e}") from None
        raise
    return key_path, pub_path


def load_private_key(key_path: Path) -> Any:
    """The Ed25519 private key in a PEM file, or FodError naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise FodError(f"{key_path}: not a readable PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FodError(f"{key_path}: not an Ed25519 private key")
    return key


def load_public_key(pub_path: Path) -> Any:
    """The Ed25519 public key in a PEM file, or FodError naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        pub = serialization.load_pem_public_key(pub_path.read_bytes())
    except (OSError, ValueError) as e:
        raise FodError(f"{pub_path}: not a readable PEM public key: {e}") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise FodError(f"{pub_path}: not an Ed25519 public key")
    return pub


def sign(data: bytes, key_path: Path) -> bytes:
    return load_private_key(key_path).sign(data)


def verify(data: bytes, signature: bytes, pub_path: Path, what: str) -> None:
    """Raise FodError naming `what` unless `signature` is valid for `data` under the public key."""
    from cryptography.exceptions import InvalidSignature

    pub = load_public_key(pub_path)
    try:
        pub.verify(signature, data)
    except InvalidSignature:
        raise FodError(f"{what}: signature does not match the manifest under {pub_path}") from None
