"""HTML report -> PDF with Qt's own rich-text engine (QTextDocument + QPdfWriter); no browser.

Works without a display: when no Qt application exists, one is created, on the "offscreen"
platform if no display is available (QT_QPA_PLATFORM is respected when set). It is a full
QApplication, so that widgets can still be created later in the same process (the app's
export button, or a test run); a bare QGuiApplication would make any later QWidget abort.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMarginsF, QUrl
from PySide6.QtGui import (
    QFont,
    QGuiApplication,
    QImage,
    QPageLayout,
    QPageSize,
    QPdfWriter,
    QTextDocument,
    QTextOption,
)

from PySide6.QtWidgets import QApplication

from fetaliqa_core import __version__
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_write

#: Resolution of the PDF's coordinate system (text and vector lines stay sharp at any zoom).
PDF_DPI = 300
#: Printer margin; QTextDocument.print_ adds its own 2 cm inside it (and the page numbers).
PAGE_MARGIN_MM = 2.0

_DATA_URI = re.compile(r'src="data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=\s]+)"')
_app: QGuiApplication | None = None


def ensure_gui_application() -> QGuiApplication:
    """The running Q(Gui)Application, or a new one (offscreen when there is no display)."""
    global _app
    existing = QGuiApplication.instance()
    if existing is not None:
        return existing  # type: ignore[return-value]
    if (not os.environ.get("QT_QPA_PLATFORM") and sys.platform.startswith("linux")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from app.qt_platform import use_utf8_locale

    use_utf8_locale()  # (under LC_ALL=C Qt warned in four lines)
    _app = QApplication(sys.argv[:1] or ["fetaliqa"])
    return _app


def _document(html: str) -> QTextDocument:
    """A QTextDocument of the page; data-URI images become document resources (QTextDocument
    does not decode data URIs itself)."""
    doc = QTextDocument()
    doc.setDefaultFont(QFont("DejaVu Sans", 10))
    # A long unbroken token (a path, a hash) wraps at the margin instead of running off the page.
    option = doc.defaultTextOption()
    option.setWrapMode(QTextOption.WrapAtWordBoundaryOrAnywhere)
    doc.setDefaultTextOption(option)
    images: list[QImage] = []

    def register(match: re.Match) -> str:
        image = QImage.fromData(QByteArray(base64.b64decode(match.group(1))))
        name = f"fetaliqa-image-{len(images)}.png"
        images.append(image)
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(name), image)
        return f'src="{name}"'

    doc.setHtml(_DATA_URI.sub(register, html))
    return doc


def html_to_pdf_bytes(html: str, title: str = "FetalIQA review report") -> bytes:
    """The A4 portrait PDF of ``html``, in memory. Safe on a worker thread once the application
    exists (Qt paints text documents onto a PDF writer outside the GUI thread), so the window
    can keep drawing while a long report is laid out."""
    doc = _document(html)
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QPdfWriter(buffer)
    writer.setResolution(PDF_DPI)
    writer.setPageLayout(QPageLayout(
        QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
        QMarginsF(PAGE_MARGIN_MM, PAGE_MARGIN_MM, PAGE_MARGIN_MM, PAGE_MARGIN_MM),
        QPageLayout.Unit.Millimeter))
    writer.setTitle(title)
    writer.setCreator(f"FetalIQA {__version__}")
    doc.print_(writer)
    del writer  # the PDF is finished when the writer goes away
    data = bytes(buffer.data())
    buffer.close()
    if not data.startswith(b"%PDF"):
        raise FetalIQAError("Could not lay out the PDF report; write .html instead.")
    return data


def write_pdf(data: bytes, out_path: str | Path) -> Path:
    """Write finished PDF bytes to ``out_path`` atomically (the folder is made if needed)."""
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetalIQAError(f"Cannot create the folder for {out_path}: {exc.strerror}.") from exc
    try:
        atomic_write(out_path, data)
    except OSError as exc:
        raise FetalIQAError(f"Cannot write {out_path}: {exc.strerror}. Close it if another "
                            "program has it open, or choose another name.") from exc
    return out_path


def html_to_pdf(html: str, out_path: str | Path, title: str = "FetalIQA review report") -> Path:
    """Render ``html`` to an A4 portrait PDF at ``out_path`` (written atomically); return it."""
    ensure_gui_application()
    return write_pdf(html_to_pdf_bytes(html, title), out_path)
