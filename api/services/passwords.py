"""Staff password hashing with Argon2id (argon2-cffi ``PasswordHasher``).

The library defaults (RFC 9106 low-memory profile: 64 MiB, t=3) are the production parameters.
Tests may switch to ``argon2.profiles.CHEAPEST`` with :func:`use_parameters`; hashes made with other
parameters still verify, and :func:`needs_rehash` tells the login code to upgrade them.
Argon2 is CPU-bound and takes tens of milliseconds: async callers should use ``asyncio.to_thread``.
"""

from __future__ import annotations

from argon2 import Parameters, PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
_dummy_hash: str | None = None


def use_parameters(params: Parameters | None = None) -> None:
    """Replace the module's hasher (``None`` restores the defaults). Meant for tests and tuning."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher() if params is None else PasswordHasher.from_parameters(params)
    _dummy_hash = None


def hash_password(plain: str) -> str:
    return _hasher.hash(plain)


def verify_password(hash: str, plain: str) -> bool:
    """True only if ``plain`` matches ``hash``; a mismatch or a malformed hash gives False."""
    try:
        return _hasher.verify(hash, plain)
    except (VerificationError, InvalidHashError, ValueError, TypeError):
        return False


def needs_rehash(hash: str) -> bool:
    """True if ``hash`` was made with other parameters than the current ones (or is unreadable)."""
    try:
        return _hasher.check_needs_rehash(hash)
    except (InvalidHashError, ValueError, TypeError):
        return True


def dummy_verify(plain: str) -> None:
    """Spend the time of one verification: a login for an unknown user must not answer faster."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("pingyi-dummy-password")
    verify_password(_dummy_hash, plain)
