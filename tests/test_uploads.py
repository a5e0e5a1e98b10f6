"""Evidence photos on the real app: sanitising uploads, attaching them, and signed staff URLs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pillow_heif
import pytest
from PIL import Image
from sanic import Sanic

from api import clock
from api.integrations.storage import LocalStorage, StorageKeyError
from api.models import Evidence
from api.services.context import Services
from api.services.evidence_links import EvidenceLinks
from api.services.uploads import open_evidence
from api.settings import Settings
from tests.support import at, citizen_token, make_world, staff_token

pillow_heif.register_heif_opener()

UPLOAD = "/api/v1/uploads"
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
ORIENTATION, MAKE, MODEL, BODY_SERIAL = 0x0112, 0x010F, 0x0110, 0xA431


@pytest.fixture
def uploads_dir(
    app_server: tuple[str, Services], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    # The session app keeps its evidence storage on app.ctx; each test gets an empty root.
    app = Sanic.get_app("pingyi_test")
    root = tmp_path / "uploads"
    monkeypatch.setattr(app.ctx, "evidence", replace(app.ctx.evidence, storage=LocalStorage(root)))
    yield root


# --- images made here ----------------------------------------------------------------------------


def _saved(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def two_tone(width: int = 400, height: int = 200, mode: str = "RGB") -> Image.Image:
    """Top half red, bottom half blue: where red ends up tells how the picture was turned."""
    img = Image.new(mode, (width, height), (200, 20, 20, 255)[: len(mode)])
    img.paste((20, 20, 200, 255)[: len(mode)], (0, height // 2, width, height))
    return img


def noisy(width: int = 240, height: int = 180) -> Image.Image:
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def revealing_exif(orientation: int | None = 6) -> Image.Exif:
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    exif[MAKE], exif[MODEL] = "Xiaomi", "Mi 11"
    exif.get_ifd(EXIF_IFD)[BODY_SERIAL] = "SN-998877"
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (28.0, 11.0, 30.0), 3: "E", 4: (112.0, 58.0, 45.0)})
    return exif


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas: a decompression bomb in 100 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024, 9))
        + chunk(b"IEND", b"")
    )


# --- helpers -------------------------------------------------------------------------------------


async def upload_file(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes,
    *,
    name: str = "photo.jpg",
    content_type: str = "image/jpeg",
) -> httpx.Response:
    """As wx.uploadFile sends it: multipart/form-data, the file under the name ``file``."""
    return await client.post(UPLOAD, files={"file": (name, data, content_type)}, headers=headers)


async def upload_raw(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes, content_type: str
) -> httpx.Response:
    return await client.post(
        UPLOAD, content=data, headers={**headers, "Content-Type": content_type}
    )


def error(res: httpx.Response, status: int) -> dict[str, Any]:
    assert res.status_code == status, res.text
    assert res.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = res.json()["error"]
    assert err["code"] and any("\u4e00" <= ch <= "\u9fff" for ch in err["message"]), err
    return err


def stored(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def photo_ids(client: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[str]:
    ids = []
    for n in range(count):
        res = await upload_file(client, headers, _saved(two_tone(64 + n, 48), "JPEG"))
        assert res.status_code == 201, res.text
        ids.append(res.json()["id"])
    return ids


async def complain(
    client: httpx.AsyncClient, headers: dict[str, str], card_code: str, photos: list[str]
) -> httpx.Response:
    body = {
        "card_code": card_code,
        "categories": ["RUDE"],
        "description": "执法人员态度恶劣，现场照片为证。",
        "photos": photos,
    }
    return await client.post("/api/v1/complaints", json=body, headers=headers)


# --- uploads -------------------------------------------------------------------------------------


async def test_jpeg_loses_all_exif_after_its_orientation_is_applied(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    citizen = await citizen_token(client)
    original = _saved(two_tone(400, 200), "JPEG", exif=revealing_exif(orientation=6).tobytes())
    with Image.open(io.BytesIO(original)) as check:  # the upload really carries what must go
        assert check.getexif().get_ifd(GPS_IFD) and check.getexif()[ORIENTATION] == 6

    res = await upload_file(client, citizen, original, name="IMG_20250301.jpg")
    assert res.status_code == 201, res.text
    photo = res.json()
    assert set(photo) >= {"id", "sha256", "width", "height", "content_type", "size"}
    assert (photo["width"], photo["height"]) == (200, 400)  # orientation 6: turned a quarter
    assert photo["content_type"] == "image/jpeg" and photo["source_type"] == "image/jpeg"

    [path] = stored(uploads_dir)
    data = path.read_bytes()
    assert path.name == f"{photo['sha256']}.jpg" and path.parent.name == photo["sha256"][:2]
    assert hashlib.sha256(data).hexdigest() == photo["sha256"] and len(data) == photo["size"]
    assert b"Exif" not in data and b"SN-998877" not in data and b"Xiaomi" not in data
    with Image.open(path) as img:
        assert not img.getexif() and "exif" not in img.info and "icc_profile" not in img.info
        assert img.size == (200, 400)
        red, blue = img.getpixel((190, 200)), img.getpixel((10, 200))
    # Turned clockwise: the red top half is now on the right.
    assert isinstance(red, tuple) and isinstance(blue, tuple)
    assert red[0] > 150 > red[2] and blue[2] > 150 > blue[0]

    row = await Evidence.get(id=photo["id"])
    assert row.case_id is None and row.storage_key == f"{photo['sha256'][:2]}/{path.name}"
    assert (row.width, row.height, row.size) == (200, 400, len(data))


async def test_heic_named_jpg_is_detected_by_content(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    citizen = await citizen_token(client)
    heic = _saved(two_tone(320, 240), "HEIF", exif=revealing_exif(orientation=None).tobytes())
    assert heic[4:12] == b"ftypheic"
    for res in (
        await upload_file(client, citizen, heic, name="IMG_0001.jpg", content_type="image/jpeg"),
        await upload_raw(client, citizen, heic, "image/jpeg"),
    ):
        assert res.status_code == 201, res.text
        photo = res.json()
        assert photo["source_type"] == "image/heic" and photo["content_type"] == "image/jpeg"
        assert (photo["width"], photo["height"]) == (320, 240)
    [path] = stored(uploads_dir)
    with Image.open(path) as img:
        assert img.format == "JPEG" and not img.getexif()
    assert b"SN-998877" not in path.read_bytes()


async def test_png_webp_and_multi_picture_jpeg_are_accepted(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    citizen = await citizen_token(client)
    see_through = two_tone(120, 80, "RGBA")
    see_through.putalpha(128)
    exif = revealing_exif(orientation=6).tobytes()
    cases = [
        # (upload, detected source type, stored as, stored size)
        (_saved(see_through, "PNG"), "image/png", "image/png", (120, 80)),
        (_saved(two_tone(120, 80, "RGBA"), "PNG"), "image/png", "image/jpeg", (120, 80)),
        (_saved(two_tone(120, 80), "WEBP", quality=90), "image/webp", "image/jpeg", (120, 80)),
        (_saved(two_tone(120, 80), "WEBP", exif=exif), "image/webp", "image/jpeg", (80, 120)),
        # Phones write MPO (a JPEG with a second picture, e.g. depth): the primary one is kept.
        (
            _saved(two_tone(120, 80), "MPO", save_all=True, append_images=[noisy(60, 40)]),
            "image/jpeg",
            "image/jpeg",
            (120, 80),
        ),
    ]
    for data, source, kept_as, size in cases:
        res = await upload_raw(client, citizen, data, "application/octet-stream")
        assert res.status_code == 201, res.text
        photo = res.json()
        assert (photo["source_type"], photo["content_type"]) == (source, kept_as), photo
        assert (photo["width"], photo["height"]) == size, photo
    for path in stored(uploads_dir):
        with Image.open(path) as img:
            assert not img.getexif() and "exif" not in img.info
            assert img.format == ("PNG" if path.suffix == ".png" else "JPEG")
            assert getattr(img, "n_frames", 1) == 1


# Pillow warns between its limit and twice it; our own check refuses there (the warning is expected).
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_broken_and_hostile_files_get_clean_errors(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    citizen = await citizen_token(client)
    full = _saved(noisy(), "JPEG", quality=95)
    truncated = error(await upload_file(client, citizen, full[: len(full) // 2]), 400)
    assert truncated["code"] == "image_corrupt"
    assert error(await upload_raw(client, citizen, b"", "image/jpeg"), 400)["code"] == "file_empty"
    assert error(await upload_file(client, citizen, b""), 400)["code"] == "file_empty"
    no_field = await client.post(
        UPLOAD, files={"photo": ("a.jpg", full, "image/jpeg")}, headers=citizen
    )
    assert error(no_field, 400)["code"] == "file_missing"
    garbled = await upload_raw(
        client, citizen, b"--x\r\ngarbage\r\n", "multipart/form-data; boundary=zzz"
    )
    assert error(garbled, 400)["code"] == "file_missing"
    text = "这不是照片，只是一段文字。\n".encode() * 20
    res = await upload_file(client, citizen, text, name="evidence.jpg")
    assert error(res, 415)["code"] == "unsupported_media_type"
    gif = _saved(two_tone(40, 30), "GIF")
    assert error(await upload_file(client, citizen, gif, name="x.jpg"), 415)

    too_big = b"\xff\xd8\xff\xe0" + os.urandom(10 * 1024 * 1024)
    err = error(await upload_raw(client, citizen, too_big, "image/jpeg"), 413)
    assert err["code"] == "file_too_large"

    for width, height in ((20000, 20000), (7000, 7000)):  # above Pillow's own limit, and ours
        err = error(await upload_file(client, citizen, png_declaring(width, height)), 413)
        assert err["code"] == "image_too_large"

    frames = [two_tone(60, 40), two_tone(60, 40).rotate(180)]
    for fmt in ("PNG", "WEBP"):
        animated = _saved(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
        assert error(await upload_file(client, citizen, animated), 415)["code"] == "image_animated"

    assert stored(uploads_dir) == [] and await Evidence.all().count() == 0


async def test_same_photo_twice_is_one_file(client: httpx.AsyncClient, uploads_dir: Path) -> None:
    alice, bob = await citizen_token(client, "alice"), await citizen_token(client, "bob")
    data = _saved(noisy(), "JPEG")
    first = (await upload_file(client, alice, data)).json()
    again = (await upload_raw(client, alice, data, "image/jpeg")).json()
    other = (await upload_file(client, bob, data)).json()
    assert first["sha256"] == again["sha256"] == other["sha256"]
    assert len({first["id"], again["id"], other["id"]}) == 3  # each upload owned on its own
    assert len(stored(uploads_dir)) == 1


async def test_uploading_needs_a_citizen_login(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    data = _saved(two_tone(), "JPEG")
    assert error(await upload_file(client, {}, data), 401)["code"] == "token_missing"
    await make_world()
    staff = await staff_token(client, "county-430102")
    assert (await upload_file(client, staff, data)).status_code == 401
    assert stored(uploads_dir) == []


# --- photos on a complaint -----------------------------------------------------------------------


async def test_a_complaint_takes_up_to_nine_own_unused_photos(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    world = await make_world()
    alice, bob = await citizen_token(client, "alice"), await citizen_token(client, "bob")
    mine = await photo_ids(client, alice, 10)
    theirs = await photo_ids(client, bob, 1)

    err = error(await complain(client, alice, world.card.code, mine), 422)
    assert [f["field"] for f in err["details"]["fields"]] == ["photos"]
    err = error(await complain(client, alice, world.card.code, [mine[0], theirs[0]]), 422)
    assert [f["field"] for f in err["details"]["fields"]] == ["photos.1"]
    err = error(await complain(client, alice, world.card.code, ["../../etc/passwd"]), 422)
    assert err["details"]["fields"][0]["field"].startswith("photos")
    missing = "00000000-0000-4000-8000-000000000000"
    assert error(await complain(client, alice, world.card.code, [missing]), 422)
    assert await Evidence.filter(case_id__not_isnull=True).count() == 0  # refusals attach nothing

    res = await complain(client, alice, world.card.code, mine[:9])
    assert res.status_code == 201, res.text
    attached = await Evidence.filter(case_id__not_isnull=True).order_by("position")
    assert [str(e.id) for e in attached] == mine[:9]
    again = error(await complain(client, alice, world.card.code, [mine[0]]), 422)
    assert again["details"]["fields"][0]["field"] == "photos.0"  # already on a case


async def test_two_complaints_racing_for_one_photo_get_it_once(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    [photo] = await photo_ids(client, alice, 1)
    results = await asyncio.gather(
        *(complain(client, alice, world.card.code, [photo]) for _ in range(4))
    )
    assert sorted(r.status_code for r in results) == [201, 422, 422, 422]
    row = await Evidence.get(id=photo)
    [winner] = [r.json()["ticket_no"] for r in results if r.status_code == 201]
    assert row.case_id is not None and (await row.case).ticket_no == winner


async def test_staff_fetch_photos_through_signed_expiring_urls(
    client: httpx.AsyncClient, services: Services, uploads_dir: Path
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    alice, bob = await citizen_token(client, "alice"), await citizen_token(client, "bob")
    ids = await photo_ids(client, alice, 2)
    ticket = (await complain(client, alice, world.card.code, ids)).json()["ticket_no"]

    county = await staff_token(client, "county-430102")
    view = (await client.get(f"/api/v1/staff/complaints/{ticket}", headers=county)).json()
    assert [p["id"] for p in view["photos"]] == ids
    url = view["photos"][0]["url"]
    assert url.startswith(f"/api/v1/evidence/{ids[0]}?expires=")
    res = await client.get(url)  # no Authorization: the signature is the permission
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    assert res.headers["cache-control"] == "private, no-store"
    row = await Evidence.get(id=ids[0])
    assert hashlib.sha256(res.content).hexdigest() == row.sha256

    query = parse_qs(urlsplit(url).query)
    expires, sig = query["expires"][0], query["sig"][0]
    path = f"/api/v1/evidence/{ids[0]}"
    forged = EvidenceLinks(key=b"not-the-server-key", ttl=600).url_for(ids[0], now=clock.now())
    for bad in (
        forged,
        f"{path}?expires={int(expires) + 3600}&sig={sig}",  # a longer life, same signature
        f"/api/v1/evidence/{ids[1]}?expires={expires}&sig={sig}",  # another photo's signature
        f"{path}?expires={expires}&sig=",
        f"{path}?expires=soon&sig={sig}",
    ):
        assert error(await client.get(bad), 403)["code"] == "url_invalid", bad

    clock.advance(timedelta(minutes=11))
    assert error(await client.get(url), 403)["code"] == "url_expired"
    fresh = (await client.get(f"/api/v1/staff/complaints/{ticket}", headers=county)).json()
    assert (await client.get(fresh["photos"][0]["url"])).status_code == 200

    # The owner may see their own photo with their login; nobody else without a signed URL.
    own = await client.get(path, headers=alice)
    assert own.status_code == 200 and own.content == res.content
    assert error(await client.get(path), 401)["code"] == "token_missing"
    assert error(await client.get(path, headers=bob), 404)["code"] == "evidence_not_found"
    assert error(await client.get("/api/v1/evidence/nope", headers=alice), 404)


async def test_citizen_can_fetch_an_unattached_upload(
    client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    alice = await citizen_token(client, "alice")
    photo = (await upload_file(client, alice, _saved(two_tone(), "PNG"))).json()
    res = await client.get(f"/api/v1/evidence/{photo['id']}", headers=alice)
    assert res.status_code == 200 and res.headers["x-content-type-options"] == "nosniff"
    assert hashlib.sha256(res.content).hexdigest() == photo["sha256"]


# --- the pieces on their own ---------------------------------------------------------------------


def test_production_refuses_the_development_signing_key(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="PINGYI_URL_SIGNING_KEY"):
        open_evidence(Settings(environment="production", uploads_dir=tmp_path))
    ctx = open_evidence(
        Settings(environment="production", uploads_dir=tmp_path, url_signing_key="k" * 32)
    )
    assert ctx.links.ttl == 600


async def test_local_storage_keeps_keys_inside_its_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    await storage.put(b"abc", "ab/abc.jpg")
    assert await storage.exists("ab/abc.jpg") and await storage.get("ab/abc.jpg") == b"abc"
    assert not await storage.exists("ab/other.jpg")
    with pytest.raises(FileNotFoundError):
        await storage.get("ab/other.jpg")
    for key in ("../escape.jpg", "/etc/passwd", "ab/../../x", "", "ab//c", ".hidden"):
        with pytest.raises(StorageKeyError):
            await storage.put(b"x", key)
    assert [p.name for p in (tmp_path / "root").rglob("*") if p.is_file()] == ["abc.jpg"]


# --- a body over the server's limit (Sanic's REQUEST_MAX_SIZE, above the 10 MB photo limit) ------


async def _raw_exchange(base_url: str, head: str, chunks: list[bytes]) -> tuple[int, Any]:
    """Sends a request over a plain socket and reads the answer (the server refuses as soon as
    it knows, without waiting for the rest of the body)."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head.encode())
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    finally:
        writer.close()
    assert headers["content-type"].startswith("application/json"), headers
    return int(status_line.split()[1]), json.loads(body)


async def test_a_body_over_the_request_limit_is_a_json_413(
    app_server: tuple[str, Services], client: httpx.AsyncClient, uploads_dir: Path
) -> None:
    citizen = await citizen_token(client)
    app = Sanic.get_app("pingyi_test")
    limit = int(app.config.REQUEST_MAX_SIZE)
    head = (
        "POST /api/v1/uploads HTTP/1.1\r\nHost: pingyi.test\r\n"
        f"Authorization: {citizen['Authorization']}\r\nContent-Type: image/jpeg\r\n"
    )
    chunk = b"\xff" * (1024 * 1024)
    # Announced: refused on the headers alone, before a byte of the body is sent.
    announced = await _raw_exchange(
        app_server[0], head + f"Content-Length: {limit + 1}\r\n\r\n", []
    )
    # Chunked (no length announced): exactly the limit, then one chunk more is announced and
    # nothing else is sent, so the server has read everything when it answers and closes (bytes
    # left unread would make it reset the connection, and the answer could be lost).
    pieces = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * (limit // len(chunk)) + [b"1\r\n"]
    assert limit % len(chunk) == 0
    chunked = await _raw_exchange(
        app_server[0], head + "Transfer-Encoding: chunked\r\n\r\n", pieces
    )
    for status, body in (announced, chunked):
        assert status == 413
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == "payload_too_large"
        assert body["error"]["details"] == {"max_bytes": limit}
        assert "12 MB" in body["error"]["message"] and "请求内容过大" in body["error"]["message"]
    assert await Evidence.all().count() == 0
    # The server is fine afterwards: a normal photo goes through.
    res = await upload_file(client, citizen, _saved(two_tone(), "JPEG"))
    assert res.status_code == 201, res.text


def _multipart(boundary: bytes, *parts: bytes) -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + (
        b"--" + boundary + b"--\r\n"
    )


async def test_malformed_multipart_is_a_clean_400_without_an_error_in_the_log(
    client: httpx.AsyncClient, uploads_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    citizen = await citizen_token(client)
    photo = _saved(two_tone(64, 48), "JPEG")
    file_part = (
        b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo
    )
    body = _multipart(b"B0undary", file_part)
    bad_charset = b'Content-Disposition: form-data; name="note"\r\n'
    bad_charset += b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nx"
    with caplog.at_level(logging.DEBUG):
        for content_type, data in (
            ("multipart/form-data", body),  # no boundary at all (Sanic: KeyError 'boundary')
            ("multipart/form-data; boundary=", body),
            ("multipart/form-data; boundary=" + "b" * 71, body),
            ("multipart/form-data; boundary=zzz", _multipart(b"zzz", b"garbage")),
            ("multipart/form-data; boundary=zzz", _multipart(b"zzz", bad_charset)),
        ):
            res = await upload_raw(client, citizen, data, content_type)
            assert error(res, 400)["code"] == "multipart_invalid", content_type
        # The same body with its boundary declared is a photo like any other.
        res = await upload_raw(client, citizen, body, "multipart/form-data; boundary=B0undary")
        assert res.status_code == 201, res.text
    logged = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert not logged, logged
    assert len(stored(uploads_dir)) == 1
