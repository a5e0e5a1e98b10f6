"""Evidence photos made safe to keep: type decided by content, metadata gone, pixels re-encoded.

Synchronous and CPU-bound: callers run :func:`sanitize` in a worker thread. Every failure of an
untrusted file ends as an :class:`AppError` (400/413/415), never as a server error.

Decisions:
- Accepted: JPEG (and MPO, the multi-picture JPEG many phones write; its primary picture is kept),
  PNG, WebP and HEIC/HEIF. Only these decoders are ever tried, whatever the name or Content-Type.
- Animated PNG/WebP are refused: a single frame of an animation is not the evidence the citizen saw.
- EXIF orientation is applied to the pixels, then every piece of metadata is dropped (EXIF with GPS
  and serial numbers, XMP, text chunks, ICC after converting to sRGB).
- Output: a picture with real transparency stays lossless PNG; everything else becomes JPEG at
  quality 85 (browsers on staff PCs cannot show HEIC, and WebP/PNG photos shrink a lot as JPEG).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass

import pillow_heif
from PIL import (
    Image,
    ImageCms,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from api.errors import AppError, BadRequest

log = logging.getLogger("pingyi.images")

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # 40 MP: above any phone camera's default output
JPEG_QUALITY = 85

# Pillow refuses (DecompressionBombError) above twice this and warns above it; our own check below
# refuses anything over MAX_PIXELS before a single pixel is decoded.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
pillow_heif.register_heif_opener()

# Only these decoders ever see an upload (the JPEG one also answers for MPO files); importing the
# plugin modules registers them without loading Pillow's other, riskier decoders.
_PLUGINS = (JpegImagePlugin, PngImagePlugin, WebPImagePlugin)
_DECODERS = ("JPEG", "PNG", "WEBP", "HEIF")
_SOURCE_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "HEIF": "image/heic",
}
_ANIMATABLE = ("PNG", "WEBP")
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class FileTooLarge(AppError):
    status = 413
    code = "file_too_large"
    message = "照片不能超过 10 MB"


class ImageTooLarge(AppError):
    status = 413
    code = "image_too_large"
    message = "照片像素过大（不超过 4000 万像素）"


class UnsupportedImage(AppError):
    status = 415
    code = "unsupported_media_type"
    message = "仅支持 JPEG、PNG、WebP、HEIC 格式的照片"


class EmptyFile(BadRequest):
    code = "file_empty"
    message = "上传的文件为空"


class CorruptImage(BadRequest):
    code = "image_corrupt"
    message = "照片文件已损坏或不完整，请重新拍摄或选择"


@dataclass(frozen=True)
class CleanPhoto:
    data: bytes
    sha256: str
    content_type: str
    extension: str
    source_type: str
    width: int
    height: int


def check_size(data: bytes) -> None:
    """Cheap checks on the raw bytes, before any decoder sees them."""
    if not data:
        raise EmptyFile()
    if len(data) > MAX_BYTES:
        raise FileTooLarge(details={"max_bytes": MAX_BYTES, "size": len(data)})


def sanitize(data: bytes) -> CleanPhoto:
    check_size(data)
    try:
        source = _verified_format(data)
        with Image.open(io.BytesIO(data), formats=_DECODERS) as img:
            _check_frames(img)
            img.load()
            upright = _upright(img)
        return _encode(_to_srgb(upright), source)
    except AppError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge() from exc
    except UnidentifiedImageError as exc:
        if _has_known_signature(data):
            raise CorruptImage() from exc  # looks like a photo, but the decoder could not read it
        raise UnsupportedImage() from exc
    except Exception as exc:
        # Decoders report hostile or broken input with many exception types (OSError,
        # SyntaxError, struct.error, ValueError, IndexError…): all of them mean "bad file".
        log.info("evidence photo refused: %s: %s", type(exc).__name__, exc)
        raise CorruptImage() from exc


def _verified_format(data: bytes) -> str:
    with Image.open(io.BytesIO(data), formats=_DECODERS) as probe:
        fmt = str(probe.format)
        width, height = probe.size
        if width * height > MAX_PIXELS:
            raise ImageTooLarge(details={"width": width, "height": height})
        probe.verify()
    if fmt not in _SOURCE_TYPES:
        raise UnsupportedImage()
    return fmt


def _check_frames(img: Image.Image) -> None:
    if img.format in _ANIMATABLE and getattr(img, "n_frames", 1) > 1:
        raise UnsupportedImage("不支持动图，请上传静态照片", code="image_animated")


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:
        # Some phone apps write malformed EXIF: the pixels are still the evidence, keep them as shot.
        log.info("evidence photo: EXIF orientation unreadable (%s), kept as stored", exc)
        return img.copy()


def _to_srgb(img: Image.Image) -> Image.Image:
    # The ICC profile is metadata too (it can name the device); convert its colours, then drop it.
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "CMYK"):
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(img, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # a broken profile: keep the pixels as they are
    return converted if converted is not None else img


def _has_alpha(img: Image.Image) -> bool:
    if not img.has_transparency_data:
        return False
    low = img.convert("RGBA").getchannel("A").getextrema()[0]  # one band: (min, max)
    return low != 255


def _jpeg_mode(img: Image.Image) -> str:
    return "L" if img.mode in ("L", "LA") else "RGB"


def _encode(img: Image.Image, source: str) -> CleanPhoto:
    buf = io.BytesIO()
    lossless = _has_alpha(img)
    if lossless:
        out, content_type, extension = img.convert("RGBA"), "image/png", "png"
    else:
        out, content_type, extension = img.convert(_jpeg_mode(img)), "image/jpeg", "jpg"
    out.info.clear()  # no encoder may copy metadata over (PNG would take an ICC profile from info)
    if lossless:
        out.save(buf, format="PNG")
    else:
        out.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    data = buf.getvalue()
    return CleanPhoto(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        extension=extension,
        source_type=_SOURCE_TYPES[source],
        width=out.width,
        height=out.height,
    )


def _has_known_signature(data: bytes) -> bool:
    head = data[:32]
    return (
        head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim"))
    )
