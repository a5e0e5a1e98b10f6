"""What a staff output may say about the reporter of an anonymous case: nothing.

Applied when a staff view is rendered, so it holds for a case made anonymous after staff first
saw it (api/services/anonymity.py) and for anything written on the case before that.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from api.models import Case, Citizen

WITHHELD = "（已隐去）"
# Phone numbers as people type them are looked for in a folded copy of the text, one character
# for one (a match there is the same span here): any decimal digit (full-width, Arabic-Indic, …)
# and the Chinese numerals read as ASCII digits; full-width signs as ASCII; every space, dash, dot,
# slash, underscore, bracket and invisible character as a plain space (a gap between digits).
_NUMERALS = dict(zip("〇零一二三四五六七八九幺两", "0012345678912", strict=True))
_GAP_CHARS = set("-./_·・()[]（）【】〔〕．／＿－｡、：:\u00ad\u200b\u200c\u200d\u2060\ufeff")
_OPENING, _CLOSING = "(（[【", ")）]】"
_GAP = r"[ *]{0,3}"  # up to three between digit groups: 139 - 1234 - 5678, 139*1234*5678
_NEAR = r"[ *]{1,3}"  # at least one: what tells 731-88886666 from any 11 digits
_CODE = rf"(?:(?:\+|00){_GAP}86{_GAP})?"  # +86 / 0086
_EDGE = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])"
_PHONES = re.compile(
    _EDGE[0]
    + "(?:"
    # Mainland mobile numbers, in full or masked as 138****8000.
    + rf"{_CODE}1{_GAP}[3-9](?:{_GAP}[0-9*]){{9}}"
    # Landlines with their area code, with or without its 0: 0731-88886666, (0731) 8888 6666,
    # 073188886666, +86 731 8888 6666, 731-88886666.
    + rf"|{_CODE}0[1-9]\d{{1,2}}{_GAP}\d{{3,4}}{_GAP}\d{{4}}"
    + rf"|{_CODE}[1-9]\d{{1,2}}{_NEAR}\d{{3,4}}{_GAP}\d{{4}}"
    # A local number written as one: 8888-6666, 888 6666.
    + rf"|\d{{3,4}}{_NEAR}\d{{4}}"
    + ")"
    + _EDGE[1]
)


@lru_cache(maxsize=4096)
def _fold(char: str) -> str:
    if char.isascii():
        return " " if char.isspace() or char in _GAP_CHARS else char
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    if char in _NUMERALS:
        return _NUMERALS[char]
    if char.isspace() or char in _GAP_CHARS or unicodedata.category(char) in ("Pd", "Cf"):
        return " "
    plain = unicodedata.normalize("NFKC", char)
    return plain if len(plain) == 1 and plain.isascii() else char


# What people wrote on the case (the reporter may have typed their own number there).
FREE_TEXT = ("description", "reply", "recheck_reply", "rating", "events", "content")


async def reporter_values(case: Case) -> list[str]:
    """The identifiers of the reporter of this case, as text (longest first)."""
    citizen = await Citizen.get_or_none(id=case.citizen_id)
    values = [case.contact_phone]
    if citizen is not None:
        values += [citizen.openid, citizen.unionid, citizen.phone]
    return _longest_first(values)


def _longest_first(values: list[str | None]) -> list[str]:
    found = {v.strip() for v in values if v and len(v.strip()) >= 2}
    return sorted(found, key=len, reverse=True)


def scrub(value: Any, secrets: list[str], *, numbers: bool = False) -> Any:
    """``value`` (dicts, lists, text) with the reporter's identity replaced; with ``numbers``, any
    mobile number too (for text people wrote: a reporter may have typed theirs)."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, WITHHELD)
        return without_numbers(value) if numbers else value
    if isinstance(value, dict):
        return {k: scrub(v, secrets, numbers=numbers) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets, numbers=numbers) for v in value]
    return value


def without_numbers(text: str) -> str:
    """``text`` with every phone number in it withheld, however it was typed."""
    folded = "".join(map(_fold, text))
    spans = [m.span() for m in _PHONES.finditer(folded)]
    for start, stop in reversed(spans):  # from the end: the spans before stay where they are
        # A bracket opened just before the number and closed inside it or just after it goes
        # with it: (0731) 8888 6666, （13912345678）.
        if start and text[start - 1] in _OPENING:
            closing = _CLOSING[_OPENING.index(text[start - 1])]
            if closing in text[start:stop]:
                start -= 1
            elif text[stop : stop + 1] == closing:
                start, stop = start - 1, stop + 1
        text = text[:start] + WITHHELD + text[stop:]
    return text


async def written_safe(case: Case | None, text: str) -> str:
    """A text the reporter wrote (a rating's comment), as staff may see it: for an anonymous
    case without the reporter's identifiers or any mobile number."""
    if case is None or not case.anonymous:
        return text
    safe: str = scrub(
        text, _longest_first([*await reporter_values(case), case.location]), numbers=True
    )
    return safe


async def staff_safe(case: Case, view: dict[str, Any]) -> dict[str, Any]:
    """A staff view of an anonymous case without its reporter: no location, no identifiers, and
    no phone number in what people wrote (the description, replies, notes, events)."""
    if not case.anonymous:
        return view
    identifiers = await reporter_values(case)
    # The location is looked for only in what people wrote: a short one ("长沙") must not
    # blank the unit names.
    written = _longest_first([*identifiers, case.location])
    safe = {**view, "location": None, "location_withheld": True}
    for key, value in safe.items():
        if key in FREE_TEXT:
            safe[key] = scrub(value, written, numbers=True)
        elif key != "photos":  # signed links: opaque, nothing of the reporter in them
            safe[key] = scrub(value, identifiers)
    return safe
