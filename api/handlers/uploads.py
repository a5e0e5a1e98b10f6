from __future__ import annotations

from sanic import Blueprint, Sanic
from sanic.headers import parse_content_header
from sanic.request import Request, RequestParameters, parse_multipart_form
from sanic.response import HTTPResponse, json, raw
from sanic_ext import openapi

from api.errors import BadRequest
from api.handlers.common import current_citizen, services
from api.services import uploads
from api.services.uploads import EvidenceContext, PhotoBytes

bp = Blueprint("uploads", url_prefix="/api/v1")
MAX_BOUNDARY = 70  # RFC 2046 §5.1.1: a boundary is 1–70 characters
MULTIPART_INVALID = "上传表单格式不正确（multipart/form-data 须带 boundary，各部分须有表单头）"


@bp.before_server_start
async def open_evidence_storage(app: Sanic) -> None:
    app.ctx.evidence = uploads.open_evidence(app.ctx.settings)


def evidence(request: Request) -> EvidenceContext:
    ctx: EvidenceContext = request.app.ctx.evidence
    return ctx


def _uploaded_bytes(request: Request) -> bytes:
    # wx.uploadFile sends multipart/form-data with the file under "file"; other clients may send
    # the raw bytes. Neither the file name nor any Content-Type decides what the file is.
    if request.content_type.lower().startswith("multipart/form-data"):
        upload = _multipart_files(request).get("file")
        if upload is None:
            raise BadRequest("请在表单字段 file 中上传照片", code="file_missing")
        return bytes(upload.body)
    return bytes(request.body or b"")


def _multipart_files(request: Request) -> RequestParameters:
    """The files of a multipart body, parsed here rather than through ``request.files``: Sanic's
    form property logs every malformed form (no boundary, a part without headers) as an ERROR
    with a traceback and answers as if it were empty; a client's bad form is a 400 of its own."""
    _, params = parse_content_header(request.headers.get("content-type", ""))
    boundary = str(params.get("boundary") or "")
    if not 0 < len(boundary) <= MAX_BOUNDARY:
        raise BadRequest(MULTIPART_INVALID, code="multipart_invalid")
    try:
        _, files = parse_multipart_form(request.body or b"", boundary.encode("utf-8"))
    except (ValueError, LookupError) as exc:  # a part without headers, an unknown charset, ...
        raise BadRequest(MULTIPART_INVALID, code="multipart_invalid") from exc
    parsed: RequestParameters = files
    return parsed


def _photo_response(photo: PhotoBytes) -> HTTPResponse:
    return raw(
        photo.data,
        content_type=photo.content_type,
        headers={
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline",
        },
    )


@bp.post("/uploads")
@openapi.definition(
    summary="上传证据照片（JPEG/PNG/WebP/HEIC，≤10 MB；multipart 字段 file 或原始字节）",
    body={
        "multipart/form-data": {"file": openapi.Binary()},
        "application/octet-stream": openapi.Binary(),
    },
    tag="citizen",
)
async def upload_photo(request: Request) -> HTTPResponse:
    citizen = await current_citizen(request)
    result = await uploads.store_photo(
        evidence(request), citizen, _uploaded_bytes(request), services=services(request)
    )
    return json(result, status=201)


@bp.get("/evidence/<evidence_id:str>")
@openapi.definition(
    summary="查看证据照片（工作人员用签名链接；上传者本人用登录令牌）", tag="citizen"
)
async def evidence_photo(request: Request, evidence_id: str) -> HTTPResponse:
    ctx = evidence(request)
    if "sig" in request.args or "expires" in request.args:
        photo = await uploads.photo_by_link(
            ctx, evidence_id, expires=request.args.get("expires"), sig=request.args.get("sig")
        )
    else:
        citizen = await current_citizen(request)
        photo = await uploads.photo_of_owner(ctx, citizen, evidence_id)
    return _photo_response(photo)
