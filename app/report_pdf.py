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

from PySide6.QtCore import QByteArray, QMarginsF, QUrl
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
from fetaliqa_core.files import atomic_path

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


def html_to_pdf(html: str, out_path: str | Path, title: str = "FetalIQA review report") -> Path:
    """Render ``html`` to an A4 portrait PDF at ``out_path`` (written atomically); return it."""
    out_path = Path(out_path)
    ensure_gui_application()
    doc = _document(html)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetalIQAError(f"Cannot create the folder for {out_path}: {exc.strerror}.") from exc
    try:
        with atomic_path(out_path) as tmp:
            writer = QPdfWriter(str(tmp))
            writer.setResolution(PDF_DPI)
            writer.setPageLayout(QPageLayout(
                QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                QMarginsF(PAGE_MARGIN_MM, PAGE_MARGIN_MM, PAGE_MARGIN_MM, PAGE_MARGIN_MM),
                QPageLayout.Unit.Millimeter))
            writer.setTitle(title)
            writer.setCreator(f"FetalIQA {__version__}")
            doc.print_(writer)
            del writer  # the PDF is finished when the writer goes away
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise FetalIQAError(f"Could not write the PDF {out_path}: check that its folder is "
                                    "writable and has free space.")
    except OSError as exc:
        raise FetalIQAError(f"Cannot write {out_path}: {exc.strerror}. Close it if another "
                            "program has it open, or choose another name.") from exc
    return out_path
