"""Which unit handles a case: 谁执法谁负责, with serious categories going one level up."""

from __future__ import annotations

from api.models import Unit
from api.services.catalog import is_serious


async def supervising_unit(unit: Unit) -> Unit:
    """The unit that supervises ``unit``: one named in config, else the unit above."""
    if unit.supervising_unit_id is not None:
        return await Unit.get(id=unit.supervising_unit_id)
    if unit.parent_id is None:
        return unit
    return await Unit.get(id=unit.parent_id)


async def handling_unit_for(
    officer_unit: Unit, categories: list[str], *, public_supervisor: bool = False
) -> Unit:
    if is_serious(categories) or public_supervisor:
        return await supervising_unit(officer_unit)
    return officer_unit


async def province_unit(unit: Unit) -> Unit:
    root_code = unit.path.split("/", 1)[0]
    return await Unit.get(code=root_code)
