"""Main-window helpers that need no state of their own: number formats, exporting the current
frame as a picture, and the About box."""

from __future__ import annotations

import platform
import re
import textwrap
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from app import theme
from fetaliqa_core.errors import FetalIQAError


def fmt_p(v: float | None, threshold: float | None = None) -> str:
    """A score with two decimals, or the digits that tell it from ``threshold`` (0.6723 beside a
    threshold of 0.67 is "0.672", as ``score`` prints it)."""
    if v is None:
        return "–"
    if threshold is None:
        return f"{v:.2f}"
    from fetaliqa_core.analysis.units import beside_threshold

    return beside_threshold(v, threshold)


def score_cuts(model) -> dict[str, float]:
    """The threshold each score is read against: the operating threshold for ``p_cls``, the
    segmenter's own call for ``p_seg``."""
    from fetaliqa_core.analysis.assessment import SEG_THRESHOLD

    return {"p_cls": float(model.threshold), "p_seg": SEG_THRESHOLD}


def name_for_path(text: str) -> str:
    """A message that starts with a file's whole path ("/a/b/trunc.mha: the file holds ...") as the
    status bar shows it: the file's name in its place. The bar elides a long line's end, and a deep
    folder left no room for the reason (the whole message stays in the tooltip)."""
    head, sep, rest = text.partition(": ")
    if not sep or "\n" in head or not (head.startswith(("/", "~", "\\")) or head[1:3] in (":\\", ":/")):
        # a path inside the line ("model bundle /a/b/c is not a directory; give ...") took the room the
        # same way: its name stands for it
        return _DEEP_PATH.sub(lambda m: m.group(1), text)
    name = Path(head.replace("\\", "/")).name
    return f"{name}: {rest}" if name else text


#: An absolute path of two folders or more within a line (no spaces in it), its last part captured.
_DEEP_PATH = re.compile(r"(?<![\w./~])/(?:[^\s/:;,]+/){2,}([^\s/:;,]+)")


def default_frame_name(win) -> str:
    sweep = win.model.sweep
    stem = Path(sweep.path).name.split(".")[0] if sweep is not None and getattr(sweep, "path", None) else "sweep"
    return f"{stem}_frame{win.model.frame:04d}.png"


def fitted_size(widget, wanted: tuple[int, int]) -> tuple[int, int]:
    """``wanted`` (width, height), made no larger than the screen's available area (less a margin
    for the window's frame): on a 1366 x 768 laptop the window opened at 1440 x 900, its answer
    line and Stop button below the screen, and the Train dialog's Start and Close buttons too."""
    from PySide6.QtGui import QGuiApplication

    screen = widget.screen() if hasattr(widget, "screen") else None
    screen = screen or QGuiApplication.primaryScreen()
    if screen is None:
        return wanted
    avail = screen.availableGeometry()
    return min(wanted[0], max(avail.width() - 16, 1)), min(wanted[1], max(avail.height() - 40, 1))


def export_frame(win, path: str | Path | None = None) -> Path | None:
    """Save the frame view as shown (frame, overlay, AC ellipse and its measurement, corner
    annotations) as a PNG. Without ``path`` a save dialog asks where."""
    if win.model.sweep is None:
        win.notify("Open a sweep first: there is no frame to export.", 6000)
        return None
    if path is None:
        start = str(Path.home() / default_frame_name(win))
        chosen, _ = QFileDialog.getSaveFileName(win, "Export frame as PNG", start, "PNG image (*.png)")
        if not chosen:
            return None
        path = chosen
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    win.refresh()
    try:
        _save_picture(win.frame_view, path)
    except OSError:
        win.alert("Export frame", f"Could not write {path}: check that its folder is writable and the disk "
                                  "has space; an earlier file there is left as it was.")
        return None
    win.notify(f"Frame {win.model.frame} saved as {path}.", 8000)
    return path


def about_text(win) -> str:
    """Version, models (with their bundle hashes), device and library versions, as HTML."""
    import PySide6

    from fetaliqa_core import __version__

    rows = [("Version", __version__)]
    models = win.models if win._models_for == win.choice else None
    if models is not None:
        choice = getattr(models, "choice", None) or win.choice
        rows.append(("Models", choice.describe()))
        for key, title in (("cls", "Classifier"), ("seg", "Segmenter")):
            lm = getattr(models, key, None)
            if lm is None:
                continue
            manifest = getattr(lm, "manifest", None)
            where = getattr(lm, "path", None)
            digest = getattr(lm, "bundle_hash", None) or ""
            text = f"{Path(where).name if where else key}"
            thr = getattr(manifest, "threshold", None)
            if manifest is not None:
                text += f" ({manifest.task}" + (f", threshold {thr:.2f})" if thr is not None else ")")
            if digest:
                text += f", bundle {digest[:12]}"
            rows.append((title, text))
        rows.append(("Device", getattr(models, "device_label", "") or str(models.device)))
    else:
        rows.append(("Models", f"{win.choice.describe() or 'none'} (not loaded)"))
        rows.append(("Device", f"{win.choice.device} (asked)"))
    import sys
    from importlib import metadata

    try:  # from the installed package's record: importing torch here froze the window 1.5-1.9 s
        torch_version = sys.modules["torch"].__version__ if "torch" in sys.modules else metadata.version("torch")
    except metadata.PackageNotFoundError:  # pragma: no cover - torch is a dependency
        torch_version = "not installed"
    rows.append(("Libraries", f"Python {platform.python_version()}, PySide6 {PySide6.__version__}, "
                              f"PyTorch {torch_version}"))
    body = "".join(f"<tr><td><b>{k}</b></td><td>{_esc(v)}</td></tr>" for k, v in rows)
    return ("<p><b>FetalIQA</b>: frame quality and abdominal circumference on fetal ultrasound "
            "blind sweeps.</p>"
            f"<table cellpadding=2>{body}</table>"
            "<p>The demo model is trained on synthetic sweeps and is not for clinical use.</p>")


def show_about(win) -> None:
    QMessageBox.about(win, "About FetalIQA", about_text(win))


def _save_picture(widget, path: Path) -> None:
    """``widget`` as shown, as a PNG at ``path``, written beside it and renamed: a failed write
    (a full disk) leaves an earlier file there as it was, and a link there is replaced, never
    written through. OSError when it cannot be written."""
    from fetaliqa_core.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        if not widget.grab().save(str(tmp), "PNG"):
            raise OSError("the image could not be saved")


def write_screenshot(win, path: str | Path) -> Path:
    """Render the whole window to a PNG (works offscreen)."""
    win.refresh()
    path = Path(path)
    try:
        _save_picture(win, path)
    except OSError:
        raise FetalIQAError(f"Could not write the screenshot {path}: check that its folder is writable "
                            "and the disk has space.") from None
    return path


def _cut_note(text: str) -> str:
    """``text`` cut to :data:`READ_NOTE_CHARS` at the end of its last clause that fits (else of a
    word), with an ellipsis: cut mid-word, the colour note ended "the frames are rea…" and never
    said they are read as grey."""
    head = text[:READ_NOTE_CHARS - 1]
    ends = [head.rfind(mark) for mark in (", ", ": ", " (")]
    end = max(ends)
    if end < READ_NOTE_CHARS // 2:
        end = head.rfind(" ")
    return (head[:end] if end > 0 else head).rstrip(" ,:") + "…"


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: A read note in the image corner is cut to this many characters, at the end of a clause or a
#: word (the status bar's tooltip and summary.json keep the whole text).
READ_NOTE_CHARS = 120
READ_NOTE_WIDTH = 32  # characters a line: the corner beside a typical fan is narrow
PIXEL_CHARS = 40  # the pixel size's line in that corner, beyond which its source goes on a line of its own
NAME_CHARS = 22  # the file's name in that corner (the window's title has the whole path): 40 reached into a 4:3 frame


def corner_texts(m, i: int, k: int, kind_text: str, hide_model: bool = False) -> tuple[str, str, str, str]:
    """The frame view's corner annotations for frame ``i`` of sweep ``k``: (the scores as plain
    text, top-left, top-right, bottom-left HTML). ``hide_model``: a blinded review before the
    verdict: no score, no best/chosen tag."""
    r = m.results
    scored = r is not None and 0 <= i < r.n_frames and bool(r.done[i])
    if hide_model:
        plain, values_html = "blinded review", f"<span style='color:{theme.TEXT_DIM}'>blinded review</span>"
    elif not scored:
        plain, values_html = "not scored yet", f"<span style='color:{theme.TEXT_DIM}'>not scored yet</span>"
    else:
        v = m.frame_values()
        cut = score_cuts(m)
        # a cascade's frame the teacher did not re-score shows the student's numbers: labelled as
        # the classifier's, a student's 0.57 read as the classifier's call (its own there: 0.71)
        confirmed = getattr(m, "confirmed", None)
        student = confirmed is not None and 0 <= i < len(confirmed) and not bool(confirmed[i])
        parts = []
        if r.has_cls:
            parts.append(f"p_cls {fmt_p(v['p_cls'], cut['p_cls'])}")
        if r.has_seg:
            parts.append(f"p_seg {fmt_p(v['p_seg'], cut['p_seg'])}")
            parts.append(f"mask {v['area'] if v['area'] is not None else 0} px")
        plain = ("student " if student else "") + " · ".join(parts)
        cls_name, seg_name = ("student", "student") if student else ("classifier", "mask")
        values_html = "<br>".join(
            ([f"<span style='color:{theme.CLS_COLOUR}'>{cls_name} p_cls {fmt_p(v['p_cls'], cut['p_cls'])}</span>"]
             if r.has_cls else [])
            + ([f"<span style='color:{theme.SEG_COLOUR}'>{seg_name} p_seg {fmt_p(v['p_seg'], cut['p_seg'])}</span>"]
               if r.has_seg else [])
            + ([f"<span style='color:{theme.TEXT_DIM}'>(not re-scored by the teacher)</span>"] if student else [])
            # the demonstration model's numbers say so wherever they appear (an exported frame too)
            + ([f"<span style='color:{theme.TEXT_DIM}'>{m.notice_words}, not for clinical use</span>"]
               if m.demo_notice else []))
    fl = m.last_flags
    tags = []
    if not hide_model:
        if i == fl.chosen:
            tags.append(f"<span style='color:{theme.BEST_COLOUR}'>★ chosen frame</span>")
        elif i in fl.chosen_best():
            tags.append(f"<span style='color:{theme.BEST_COLOUR}'>best of sweep {k + 1}</span>")
    verdict = m.verdicts.get(i)
    if verdict:
        tags.append(f"reviewed: {verdict.replace('_', ' ')}")
    name = Path(m.sweep.path).name if getattr(m.sweep, "path", None) else ""
    if len(name) > NAME_CHARS:  # the corner beside the fan is narrow: keep the start and the end
        name = name[:NAME_CHARS // 2 - 1] + "…" + name[-(NAME_CHARS - NAME_CHARS // 2):]
    # frames are numbered from 0 ("153 / 839" read as 153 of 839); the pixel size beside the name,
    # with where it comes from: the lengths on the frame rest on it
    sweep = m.sweep
    if getattr(sweep, "spacing_problem", None) is None and getattr(sweep, "spacing_mm", None) is not None:
        from fetaliqa_core.io._common import spacing_text
        from fetaliqa_core.io.spacing import source_text

        row, col = (float(v) for v in tuple(sweep.spacing_mm)[:2])
        order = "" if row == col else " (w x h)"  # (a narrow corner: the order in short)
        source = source_text(sweep.spacing_source, given="set by you")
        pixel = f"pixel {spacing_text(sweep.spacing_mm, say_order=False)}{order} · {source}"
    else:
        pixel = "pixel size unknown: no lengths"
    # (the corner is a fixed box: "pixel 0.391266 x 0.471115 mm (w x h) · file header" was cut to
    # "... · file hea"; a long line gives its source a line of its own)
    pixel_html = "<br>".join(_esc(part) for part in (pixel.split(" · ", 1) if len(pixel) > PIXEL_CHARS else [pixel]))
    tl = (f"frame <b>{i}</b> of 0–{m.n_frames - 1}<br>sweep {k + 1}{kind_text}"
          + (f"<br><span style='color:{theme.TEXT_DIM}'>{_esc(name)}</span>" if name else "")
          + f"<br><span style='color:{theme.TEXT_DIM}'>{pixel_html}</span>")
    for note in getattr(m.sweep, "read_notes", ()) or ():  # what reading the file did, for as long as it is shown
        short = str(note).split(";")[0].strip()
        short = short if len(short) <= READ_NOTE_CHARS else _cut_note(short)
        lines = "<br>".join(_esc(line) for line in textwrap.wrap("⚠ " + short, READ_NOTE_WIDTH))
        tl += f"<br><span style='color:{theme.THRESHOLD_COLOUR}'>{lines}</span>"
    return plain, tl, values_html, "<br>".join(tags)


def models_key(models) -> str:
    """Which models are loaded, by their bundles' hashes ("" for none): the threshold the user
    sets is remembered per key."""
    if models is None:
        return ""
    parts = []
    for key in ("cls", "seg"):
        lm = getattr(models, key, None)
        if lm is not None:
            parts.append(f"{key}:{getattr(lm, 'bundle_hash', None) or getattr(lm, 'path', '')}")
    return "+".join(parts)


def ask_spacing(win, value: float | tuple[float, float] | str | None = None) -> bool:
    """View > Set pixel spacing: the pixel spacing (mm per pixel) the lengths of this sweep use,
    for a file that records none or a wrong one. The size now is shown and offered as the product
    prints it, width x height, so that keeping it keeps pixels that are not square as they are;
    one number makes square pixels, two (``0.3x0.4``) give width and height, and one number for
    pixels said not to be square is refused, asking for both. ``value`` skips the dialog (tests:
    a number, ``(row_mm, col_mm)`` or the text typed). Returns whether a spacing was set."""
    from fetaliqa_core.io._common import spacing_text
    from fetaliqa_core.io.spacing import parse_spacing

    m = win.model
    if m.sweep is None:
        win.notify("Open a sweep first.", 5000)
        return False
    if value is None:
        from PySide6.QtWidgets import QInputDialog

        from fetaliqa_core.io import SPACING_FROM_USER

        sweep = m.sweep
        row, col = (float(v) for v in sweep.spacing_mm)
        source = sweep.spacing_source
        why = m.spacing_problem or (f"Now {spacing_text((row, col))} per pixel ("
                                    f"{'set here' if source == SPACING_FROM_USER else source}).")
        offered = ("" if sweep.pixel_aspect is not None else "0.28") if m.spacing_problem else (
            f"{col:g}" if row == col else f"{col:g}x{row:g}")
        value, ok = QInputDialog.getText(win, "Pixel spacing", f"{why}\n\nmm per pixel: one number for square "
                                         "pixels, or width x height (e.g. 0.3x0.4):", text=offered)
        if not ok:
            return False
    try:
        given = parse_spacing(value) if isinstance(value, str) else value
        pair = (given, given) if isinstance(given, (int, float)) else tuple(given)
        if m.sweep.spacing_known and all(abs(float(a) - float(b)) <= 1e-9 for a, b in zip(pair, m.sweep.spacing_mm)):
            return False  # the size it has, kept: still the file's own, not one set here
        m.set_spacing(given)
        win.judge_masks_again()
    except FetalIQAError as exc:
        QMessageBox.warning(win, "Pixel spacing", str(exc))
        return False
    win.notify(f"Pixel spacing set to {spacing_text(m.sweep.spacing_mm)} per pixel; lengths are measured with it.",
               8000)
    return True
