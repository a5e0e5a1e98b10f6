"""WeChat's image check for evidence photos (``wxa/img_sec_check``, synchronous).

The check runs on a copy of the re-encoded photo scaled to the size WeChat accepts (≤ 750 × 1334 px,
≤ 1 MB). ``risky`` (errcode 87014) refuses the upload (422, nothing stored); any other error or a
timeout stores the photo *held*: it is shown to no one but a reviewer until released.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass

from PIL import Image

from api.integrations.wechat import WeChatError
from api.models.moderation import ContentStatus
from api.services.context import Services
from api.services.moderation import ContentRisky

log = logging.getLogger("pingyi.image_check")

CHECK_BOX = (750, 1334)
CHECK_MAX_BYTES = 1024 * 1024


class PhotoRisky(ContentRisky):
    message = "照片含有违法违规内容，未能上传"


@dataclass(frozen=True)
class PhotoVerdict:
    status: str  # ok | held
    detail: str = ""


def check_copy(data: bytes) -> bytes:
    """A JPEG small enough for the check, made from the already sanitised photo. Blocking."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        copy = img.convert("RGB")
    copy.thumbnail(CHECK_BOX)
    for quality in (85, 70, 50):
        out = io.BytesIO()
        copy.save(out, format="JPEG", quality=quality)
        if out.tell() <= CHECK_MAX_BYTES:
            break
    return out.getvalue()


async def check_photo(services: Services, copy: bytes) -> PhotoVerdict:
    try:
        verdict = await asyncio.wait_for(
            services.wechat.img_sec_check(copy), timeout=services.settings.content_check_timeout
        )
    except TimeoutError:
        log.warning("img_sec_check timed out: photo held")
        return PhotoVerdict(ContentStatus.HELD, "timeout")
    except WeChatError as exc:
        log.warning("img_sec_check failed: errcode %s: photo held", exc.errcode)
        return PhotoVerdict(ContentStatus.HELD, f"errcode {exc.errcode}")
    if verdict == "risky":
        raise PhotoRisky(details={"fields": [{"field": "file", "reason": "内容违规"}]})
    return PhotoVerdict(ContentStatus.OK)
