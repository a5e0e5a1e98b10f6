"""Reply templates per misconduct category, from config/reply_templates.toml, filled for one case."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from api.models import Officer, StaffUser, Unit
from api.services.catalog import CATEGORIES
from api.services.staff_cases import case_in_scope
from api.settings import ROOT

TEMPLATES = ROOT / "config" / "reply_templates.toml"


@lru_cache(maxsize=4)
def load_templates(path: Path = TEMPLATES) -> dict[str, dict[str, str]]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    return {key: {"title": str(v["title"]), "text": str(v["text"])} for key, v in raw.items()}


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    return text


async def templates_for_case(user: StaffUser, ticket_no: str) -> dict[str, Any]:
    """The templates that fit a case's categories (then the general one), filled in, editable."""
    case = await case_in_scope(user, ticket_no)
    officer = await Officer.get(id=case.officer_id)
    unit = await Unit.get(id=case.handling_unit_id)
    values = {"officer": officer.name, "unit": unit.name, "ticket": case.ticket_no}
    templates = load_templates()
    keys = [c for c in case.categories if c in templates] + ["default"]
    return {
        "items": [
            {
                "category": key,
                "category_label": CATEGORIES[key].label if key in CATEGORIES else "通用",
                "title": templates[key]["title"],
                "text": _fill(templates[key]["text"], values),
            }
            for key in dict.fromkeys(keys)
        ]
    }
