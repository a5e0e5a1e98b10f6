"""Personal data encrypted at rest: AES-256-GCM, one key from the settings (``PINGYI_FIELD_KEY``).

The citizen's verified phone (``citizen.phone``) and a named report's contact phone
(``case.contact_phone``) are stored as ``enc1:`` + base64url(nonce ‖ ciphertext ‖ tag), with
the column's name as associated data, so a value copied into another column does not decrypt.
The model field does the work (:class:`EncryptedCharField`): code reads and writes plain
numbers, the database only ever holds ciphertext. The price: these columns cannot be searched
or compared in SQL (nothing does), and a lost key loses the numbers — keep it with the other
production secrets. A value without the prefix is a plaintext number from before encryption;
``python -m api.seed`` (``db.migrate``) encrypts those in place.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from tortoise import connections, fields

from api.settings import DEV_FIELD_KEY, get_settings

PREFIX = "enc1:"
MIN_KEY_LENGTH = 32
_NONCE = 12
_INFO = b"pingyi field encryption v1"


class FieldKeyError(RuntimeError):
    """The configured key cannot decrypt what is stored (a wrong or rotated key)."""


class FieldCipher:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the field encryption key is empty")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            secret.encode()
        )
        self._aead = AESGCM(key)

    def encrypt(self, plain: str, *, column: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plain.encode(), column.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str, *, column: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(stored[len(PREFIX) :].encode())
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], column.encode())
            return plain.decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise FieldKeyError(
                f"{column}: stored value does not decrypt with PINGYI_FIELD_KEY"
            ) from exc


_active: FieldCipher | None = None


def configure(secret: str, *, production: bool = False) -> None:
    """The key of this process; production refuses the development default and short keys."""
    global _active
    if production and (secret == DEV_FIELD_KEY or len(secret) < MIN_KEY_LENGTH):
        raise RuntimeError(
            "refusing to start in production without PINGYI_FIELD_KEY "
            f"(a random secret of at least {MIN_KEY_LENGTH} characters; it encrypts phones)"
        )
    _active = FieldCipher(secret)


def cipher() -> FieldCipher:
    if _active is None:  # a process that never configured one (a script): the settings' key
        configure(get_settings().field_key)
    assert _active is not None
    return _active


def is_encrypted(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


class EncryptedCharField(fields.CharField):
    """A text column stored encrypted; Python code sees the plain value."""

    skip_to_python_if_native = False

    def __init__(self, *, column: str, max_length: int = 128, **kwargs: Any) -> None:
        self.column = column
        super().__init__(max_length=max_length, **kwargs)

    def to_db_value(self, value: Any, instance: Any) -> str | None:
        if value is None or is_encrypted(str(value)):
            return None if value is None else str(value)
        return cipher().encrypt(str(value), column=self.column)

    def to_python_value(self, value: Any) -> str | None:
        if value is None:
            return None
        text = str(value)
        return cipher().decrypt(text, column=self.column) if is_encrypted(text) else text


async def check_stored_key() -> None:
    """Refuses to start when the key cannot open what is stored (one value of each column):
    better no service than every view of a case failing, or phones written under two keys."""
    conn = connections.get("default")
    for table, column in (("citizen", "phone"), ("case", "contact_phone")):
        rows = await conn.execute_query_dict(
            f'SELECT "{column}" AS v FROM "{table}" WHERE "{column}" LIKE \'{PREFIX}%\' LIMIT 1'
        )
        for row in rows:
            cipher().decrypt(str(row["v"]), column=f"{table}.{column}")
