"""Evidence photos: upload, attach to a complaint, and hand them out to the people allowed to see them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sanic.exceptions import SanicException
from sanic.request import Request
from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock
from api.errors import NotFound, ValidationFailed
from api.integrations.storage import Storage, open_storage
from api.models import Case, Citizen, Evidence
from api.models.moderation import ContentStatus
from api.services import image_check, images, moderation
from api.services.context import Services
from api.services.evidence_links import EvidenceLinks
from api.settings import DEV_URL_SIGNING_KEY, Settings

log = logging.getLogger("pingyi.uploads")

MAX_PHOTOS_PER_CASE = 9
# Decoding a 40 MP photo takes ~160 MB; two at a time keeps a worker's memory bounded.
DECODE_SLOTS = 2


@dataclass(frozen=True)
class EvidenceContext:
    storage: Storage
    links: EvidenceLinks
    decode_slots: asyncio.Semaphore


@dataclass(frozen=True)
class PhotoBytes:
    data: bytes
    content_type: str


def open_evidence(settings: Settings) -> EvidenceContext:
    if settings.is_production and settings.url_signing_key == DEV_URL_SIGNING_KEY:
        raise RuntimeError("PINGYI_URL_SIGNING_KEY must be set in production")
    return EvidenceContext(
        storage=open_storage(settings),
        links=EvidenceLinks(key=settings.url_signing_key.encode(), ttl=settings.evidence_url_ttl),
        decode_slots=asyncio.Semaphore(DECODE_SLOTS),
    )


def _public(evidence: Evidence) -> dict[str, Any]:
    return {
        "id": str(evidence.id),
        "sha256": evidence.sha256,
        "width": evidence.width,
        "height": evidence.height,
        "content_type": evidence.content_type,
        "source_type": evidence.source_type,
        "size": evidence.size,
        "content_status": evidence.content_status,  # held: waiting for a person (content check)
    }


def _sanitize_for_check(data: bytes) -> tuple[images.CleanPhoto, bytes]:
    photo = images.sanitize(data)
    return photo, image_check.check_copy(photo.data)


async def store_photo(
    ctx: EvidenceContext, citizen: Citizen, data: bytes, *, services: Services
) -> dict[str, Any]:
    images.check_size(data)  # before any decoding, and before waiting for a slot
    async with ctx.decode_slots:
        photo, copy = await asyncio.to_thread(_sanitize_for_check, data)
    # WeChat's image check before anything is stored: risky → 422 and nothing kept.
    verdict = await image_check.check_photo(services, copy)
    key = f"{photo.sha256[:2]}/{photo.sha256}.{photo.extension}"
    # Content-addressed: the same photo twice is one file. Written before the row, so a row never
    # names a missing file (a crash in between leaves an unreferenced file, harmless).
    if not await ctx.storage.exists(key):
        await ctx.storage.put(photo.data, key)
    evidence = await Evidence.create(
        owner_id=citizen.id,
        sha256=photo.sha256,
        storage_key=key,
        content_type=photo.content_type,
        source_type=photo.source_type,
        size=len(photo.data),
        width=photo.width,
        height=photo.height,
        created_at=clock.now(),
        content_status=verdict.status,
    )
    if verdict.status == ContentStatus.HELD:
        await moderation.held_photo(
            citizen_id=citizen.id, evidence_id=evidence.id, detail=verdict.detail
        )
    return _public(evidence)


async def claim_photos(
    citizen: Citizen, photo_ids: list[str], *, conn: BaseDBAsyncClient
) -> list[Evidence]:
    """Lock the listed photos: each must be the citizen's own upload, not yet on any case."""
    photo_ids = list(dict.fromkeys(photo_ids))  # the same photo listed twice is one photo
    if not photo_ids:
        return []
    rows = (
        await Evidence.filter(id__in=photo_ids, owner_id=citizen.id, case_id=None)
        .select_for_update()
        .using_db(conn)
    )
    by_id = {str(row.id): row for row in rows}
    bad = [i for i, photo_id in enumerate(photo_ids) if photo_id not in by_id]
    if bad:
        reason = "照片不存在、不是您上传的或已用于其他案件"
        raise ValidationFailed(
            f"字段 photos 不符合要求：{reason}",
            details={
                "fields": [
                    {"field": f"photos.{i}", "reason": reason, "type": "value_error"} for i in bad
                ]
            },
        )
    return [by_id[photo_id] for photo_id in photo_ids]


async def attach_photos(photos: list[Evidence], case: Case, *, conn: BaseDBAsyncClient) -> None:
    now = clock.now()
    for position, photo in enumerate(photos):
        await (
            Evidence.filter(id=photo.id)
            .using_db(conn)
            .update(case_id=case.id, position=position, attached_at=now)
        )


def _links_of_current_app() -> EvidenceLinks | None:
    # A signed URL belongs to the app serving the request (its key, its clock). Outside a request
    # (a script, an export) there is no one to serve it, so no URL is made.
    try:
        request = Request.get_current()
    except SanicException:
        return None
    ctx = getattr(request.app.ctx, "evidence", None)
    return ctx.links if isinstance(ctx, EvidenceContext) else None


async def evidence_refs(
    case: Case, links: EvidenceLinks | None = None, *, include_held: bool = False
) -> list[dict[str, Any]]:
    """The photos of a case for staff: opaque ids and short-lived signed URLs, no metadata.

    A photo WeChat's check did not clear has no URL (a reviewer's view excepted while it is held).
    """
    links = links or _links_of_current_app()
    now = clock.now()
    rows = (
        await Evidence.filter(case_id=case.id)
        .order_by("position")
        .values_list("id", "content_status")
    )
    return [
        {
            "id": str(i),
            "content_status": status,
            "url": links.url_for(str(i), now=now)
            if links and (_shown(status) or (include_held and status == ContentStatus.HELD))
            else None,
        }
        for i, status in rows
    ]


def _shown(status: str) -> bool:
    return status in ContentStatus.VISIBLE


def _photo_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise NotFound("未找到该照片", code="evidence_not_found") from exc


async def _read(ctx: EvidenceContext, evidence: Evidence | None) -> PhotoBytes:
    if evidence is None:
        raise NotFound("未找到该照片", code="evidence_not_found")
    try:
        data = await ctx.storage.get(evidence.storage_key)
    except FileNotFoundError as exc:
        log.error("evidence %s: file %s missing from storage", evidence.id, evidence.storage_key)
        raise NotFound("照片文件不存在", code="evidence_missing") from exc
    return PhotoBytes(data=data, content_type=evidence.content_type)


async def photo_by_link(
    ctx: EvidenceContext, evidence_id: str, *, expires: str | None, sig: str | None
) -> PhotoBytes:
    ctx.links.check(evidence_id, expires=expires, sig=sig, now=clock.now())
    evidence = await Evidence.get_or_none(id=_photo_id(evidence_id))
    if evidence is not None and evidence.content_status == ContentStatus.REJECTED:
        evidence = None  # a rejected photo is shown to no one, whatever link was handed out
    return await _read(ctx, evidence)


async def photo_of_owner(ctx: EvidenceContext, citizen: Citizen, evidence_id: str) -> PhotoBytes:
    # Someone else's photo is answered exactly like a missing one.
    photo_id = _photo_id(evidence_id)
    return await _read(ctx, await Evidence.get_or_none(id=photo_id, owner_id=citizen.id))
