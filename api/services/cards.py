"""Evaluation-card (执法评议卡) codes, their public URL and the printable QR image."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont
from qrcode.image.pil import PilImage

# No 0/O, 1/I/L: a code read aloud on the 12328 hotline or typed from a worn card stays unambiguous.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
# 31**16 ≈ 2**79: a card cannot be guessed to rate or report an officer one never met.
CODE_LENGTH = 16
_ALPHABET_SET = frozenset(CODE_ALPHABET)

QR_BOX_SIZE = 10
QR_BORDER = 4  # the quiet zone the QR standard requires
_CAPTION_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/adobe-source-han-sans/SourceHanSansCN-Regular.otf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)


def new_card_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_card_code(raw: str) -> str | None:
    """The canonical form of a code typed or scanned by a citizen, or None if it cannot be one."""
    code = raw.strip().upper()
    if len(code) != CODE_LENGTH or not _ALPHABET_SET.issuperset(code):
        return None
    return code


def card_url(public_base_url: str, code: str) -> str:
    """The URL printed in the QR; the mini-program opens it through 扫普通链接二维码打开小程序."""
    return f"{public_base_url.rstrip('/')}/c/{code}"


def render_card_png(
    *, url: str, path: Path, officer_name: str, cert_no: str, unit_name: str
) -> Path:
    """Write a printable PNG of the card's QR, captioned when a CJK font is installed. Blocking."""
    image = _qr_image(url)
    font_file = _find_caption_font()
    if font_file is not None:
        lines = [f"{officer_name}  执法证号 {cert_no}", unit_name, "微信扫码 · 评议执法 · 投诉举报"]
        image = _with_caption(image, font_file, lines)
    return _save_png(image, path)


def _qr_image(url: str) -> Image.Image:
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_Q,
        box_size=QR_BOX_SIZE,
        border=QR_BORDER,
        image_factory=PilImage,
    )
    qr.add_data(url)
    qr.make(fit=True)
    image: Image.Image = qr.make_image(fill_color="black", back_color="white").get_image()
    return image.convert("RGB")


def _find_caption_font() -> str | None:
    override = os.environ.get("PINGYI_CARD_FONT")
    candidates = (override, *_CAPTION_FONTS) if override else _CAPTION_FONTS
    return next((c for c in candidates if Path(c).is_file()), None)


def _with_caption(qr: Image.Image, font_file: str, lines: list[str]) -> Image.Image:
    width = qr.width
    margin = QR_BOX_SIZE * QR_BORDER
    try:
        fonts = [_fitting_font(font_file, line, width - 2 * margin) for line in lines]
    except OSError:  # unreadable font: the QR alone is still a valid card
        return qr
    line_height = int(max(f.size for f in fonts)) + QR_BOX_SIZE
    canvas = Image.new("RGB", (width, qr.height + line_height * len(lines) + margin // 2), "white")
    canvas.paste(qr, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = qr.height  # below the full quiet zone: text inside it can stop scanners locking on
    for line, font in zip(lines, fonts, strict=True):
        draw.text((width // 2, y), line, fill="black", font=font, anchor="mt")
        y += line_height
    return canvas


def _fitting_font(font_file: str, text: str, max_width: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.truetype(font_file, 28)
    for size in range(26, 10, -2):
        if font.getlength(text) <= max_width:
            break
        font = ImageFont.truetype(font_file, size)
    return font


def _save_png(image: Image.Image, path: Path) -> Path:
    # Write then rename, so a print shop never picks up half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path
