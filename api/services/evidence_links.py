"""Expiring, signed URLs for evidence photos.

Staff see photos in ``<img>`` tags and the mini-program's image viewer, which cannot send an
``Authorization`` header; a short-lived URL signed with a server key is the capability instead. It is
handed out only inside a staff case view, which is already scope-checked.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from api.errors import Forbidden

_PURPOSE = "evidence"


class UrlExpired(Forbidden):
    code = "url_expired"
    message = "照片链接已过期，请刷新案件后重试"


class UrlInvalid(Forbidden):
    code = "url_invalid"
    message = "照片链接无效"


@dataclass(frozen=True)
class EvidenceLinks:
    key: bytes
    ttl: int  # seconds

    def url_for(self, evidence_id: str, *, now: datetime) -> str:
        expires = int(now.timestamp()) + self.ttl
        return f"/api/v1/evidence/{evidence_id}?expires={expires}&sig={self._sign(evidence_id, expires)}"

    def check(
        self, evidence_id: str, *, expires: str | None, sig: str | None, now: datetime
    ) -> None:
        """Raise 403 unless ``sig`` signs (id, expires) and ``expires`` has not passed."""
        if not expires or not sig or not expires.isdigit() or len(expires) > 12:
            raise UrlInvalid()
        when = int(expires)
        if not hmac.compare_digest(sig.encode(), self._sign(evidence_id, when).encode()):
            raise UrlInvalid()
        if now.timestamp() > when:
            raise UrlExpired()

    def _sign(self, evidence_id: str, expires: int) -> str:
        message = f"{_PURPOSE}:{evidence_id}:{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()
