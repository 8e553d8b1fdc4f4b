"""The QR image of a device-pairing payload, as SVG and PNG, rendered in memory with segno (pure Python).

One renderer for every service that answers a QR code (pairing's QR-mode sessions, unbinding's QR batches).
The payload holds the Wi-Fi password and the assembled token: the images are returned to the caller only,
never written to disk, stored or logged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import segno
from pydantic import SecretStr

# error correction M (15%): a camera reads a phone screen or a printout; quiet zone 4 modules (the standard)
_ERROR = "m"
_BORDER = 4


@dataclass(frozen=True, slots=True)
class QrImages:
    svg: str
    png: bytes

    def __repr__(self) -> str:
        return f"QrImages(svg=<{len(self.svg)} chars>, png=<{len(self.png)} bytes>)"


def render(payload: SecretStr, *, scale: int = 8) -> QrImages:
    """Both images of one payload (UTF-8 bytes, byte mode: the JSON may hold any character)."""
    code = segno.make_qr(payload.get_secret_value().encode("utf-8"), error=_ERROR, mode="byte")
    svg, png = io.BytesIO(), io.BytesIO()
    code.save(svg, kind="svg", scale=scale, border=_BORDER, xmldecl=False)
    code.save(png, kind="png", scale=scale, border=_BORDER)
    return QrImages(svg.getvalue().decode("utf-8"), png.getvalue())


def terminal_text(payload: SecretStr) -> str:
    """The QR code as text for a terminal (for `fleet pair` and `fleet unbind`)."""
    code = segno.make_qr(payload.get_secret_value().encode("utf-8"), error=_ERROR, mode="byte")
    out = io.StringIO()
    code.terminal(out=out, compact=True, border=_BORDER)
    return out.getvalue()
