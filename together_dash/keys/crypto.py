"""Encryption at rest for upstream secrets: MultiFernet over FIELD_ENCRYPTION_KEYS (newest first)."""
from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(secret: str) -> str:
    """Encrypt with the newest key."""
    return _current().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt with whichever configured key made the token."""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from None


def reencrypt(token: str) -> str:
    """Re-encrypt a token under the newest key (for rotate_encryption_key)."""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from None
