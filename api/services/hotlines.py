"""A unit's public hotline: a number a citizen can really dial, written one way.

The hotline is printed on every card of the unit's officers and on its disclosure page, so it
takes only what Chinese numbering allows (GB/T 2260 area codes, YD/T numbering): a short service
number (12328, 12345, 95xxx), a landline with its area code (``0731-88886666``, optionally with an
extension ``0731-88886666-123``), a mobile (11 digits, as ``leader_phone``) or a 400/800 number.
Full-width digits and the usual separators are normalised; anything else is refused.
"""

from __future__ import annotations

import re

from api.integrations.sms import normalize_phone

INVALID = (
    "电话号码无效：应为 12328 等 3–6 位服务号码、带区号的固定电话（如 0731-88886666，"
    "分机写作 0731-88886666-123）、手机号码或 400/800 号码"
)

# Full-width forms (as a Chinese IME types them) and dashes, read as their ASCII counterparts.
_WIDE = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_WIDE.update({0x3000: ord(" "), **{code: ord("-") for code in (*range(0x2010, 0x2016), 0x2212)}})
_ALLOWED = re.compile(r"[0-9 ().+\-转]+")
_INTERNATIONAL = re.compile(r"(?:\+|00)86[ \-]*")
_AREA_IN_PARENS = re.compile(r"\( *(0[0-9]{2,3}) *\) *")
_GROUPS = re.compile(r"[0-9](?:[0-9 \-]*[0-9])?")
_SEPARATORS = re.compile(r"[ \-]")
_SHORT = re.compile(r"1[0-9]{2,5}|9[0-9]{4,5}")
_SPECIAL = re.compile(r"([48]00)([0-9]{3})([0-9]{4})")
# Beijing (010) and the 02x cities have 8-digit numbers; other areas 7 or 8. No local number
# starts with 0 or 1 (those are prefixes and service numbers).
_LANDLINE = re.compile(r"(0(?:10|2[0-9]))([2-9][0-9]{7})|(0[3-9][0-9]{2})([2-9][0-9]{6,7})")
_EXTENSION = re.compile(r"[0-9]{1,6}")


def normalize_hotline(raw: str) -> str:
    """``raw`` as the card shows it, or ValueError with the Chinese reason."""
    text = raw.translate(_WIDE).strip()
    if not text or not _ALLOWED.fullmatch(text):
        raise ValueError(INVALID)
    try:
        return normalize_phone(text)
    except ValueError:
        pass
    landline = _landline(text)
    if landline is not None:
        return landline
    digits = _digits(text)
    if digits is not None and _SHORT.fullmatch(digits):
        return digits
    special = _SPECIAL.fullmatch(digits or "")
    if special is not None:
        return "-".join(special.groups())
    raise ValueError(INVALID)


def _digits(text: str) -> str | None:
    """The digits of a number written in groups separated by spaces or hyphens."""
    if not _GROUPS.fullmatch(text):
        return None
    return _SEPARATORS.sub("", text)


def _landline(text: str) -> str | None:
    international = _INTERNATIONAL.match(text)
    if international is not None:  # +86 731 …, and the common +86 0731 …
        text = "0" + text[international.end() :].removeprefix("0")
    text = _AREA_IN_PARENS.sub(r"\1-", text, count=1) if text.startswith("(") else text
    main, sep, extension = text.partition("转")
    if sep:
        return _with_extension(main.strip(), extension.strip())
    whole = _landline_digits(main)
    if whole is not None:
        return whole
    head, sep, tail = main.rpartition("-")
    return _with_extension(head.strip(), tail.strip()) if sep else None


def _with_extension(main: str, extension: str) -> str | None:
    number = _landline_digits(main)
    if number is None or not _EXTENSION.fullmatch(extension):
        return None
    return f"{number}-{extension}"


def _landline_digits(text: str) -> str | None:
    digits = _digits(text)
    match = _LANDLINE.fullmatch(digits or "")
    if match is None:
        return None
    area, local = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
    return f"{area}-{local}"
