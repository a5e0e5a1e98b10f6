"""What a staff output may say about the reporter of an anonymous case: nothing.

Applied when a staff view is rendered, so it holds for a case made anonymous after staff first
saw it (api/services/anonymity.py) and for anything written on the case before that.
"""

from __future__ import annotations

import re
from typing import Any

from api.models import Case, Citizen

WITHHELD = "（已隐去）"
# Phone numbers as people type them, looked for in a folded copy of the text: full-width digits,
# signs and spaces read as ASCII, one character for one, so a match there is the same span here.
_FOLD = str.maketrans("０１２３４５６７８９＋－—–‐（）＊　", "0123456789+----()* ")
_GAP = r"[ \t\-.]?"  # one space, dash or dot between digit groups: 139 1234 5678, 139-1234-5678
# Mainland mobile numbers, in full or masked as 138****8000, with or without +86 / 0086.
_MOBILE = re.compile(
    rf"(?<![0-9A-Za-z])(?:(?:\+|00)86{_GAP})?1{_GAP}[3-9](?:{_GAP}[0-9*]){{9}}(?![0-9A-Za-z])"
)
# Landlines with their area code: 0731-88886666, (0731) 8888 6666, 073188886666.
_LANDLINE = re.compile(
    rf"(?<![0-9A-Za-z])(?:\(0\d{{2,3}}\)|0\d{{2,3}}){_GAP}\d{{3,4}}{_GAP}\d{{4}}(?![0-9A-Za-z])"
)
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
    folded = text.translate(_FOLD)
    spans = sorted(
        (m.span() for pattern in (_MOBILE, _LANDLINE) for m in pattern.finditer(folded)),
        reverse=True,
    )
    end = len(text) + 1
    for start, stop in spans:  # from the end, so the spans before stay where they are
        if stop <= end:
            text = text[:start] + WITHHELD + text[stop:]
            end = start
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
