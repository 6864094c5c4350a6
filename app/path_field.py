"""A line edit for a path with a Browse… button, shared by the dialogs."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget


class PathField(QWidget):
    """A line edit with a Browse… button that picks a folder (``pick_dir``) or a file matching
    ``file_filter``; ``title`` is the file dialog's title."""

    def __init__(self, placeholder: str, title: str, pick_dir: bool = True, file_filter: str = "",
                 min_width: int = 380) -> None:
        super().__init__()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setMinimumWidth(min_width)
        self.button = QPushButton("Browse…")
        self.button.clicked.connect(self._browse)
        self._title, self._dir, self._filter = title, pick_dir, file_filter
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.button)

    def _browse(self) -> None:
        start = self.edit.text().strip() or str(Path.home())
        if self._dir:
            path = QFileDialog.getExistingDirectory(self, self._title, start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, self._title, start, self._filter)
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()

    def set_text(self, text: str | Path | None) -> None:
        self.edit.setText(str(text) if text else "")

    def value(self) -> Path | None:
        """The path entered (``~`` expanded), or None when the field is empty."""
        text = self.text()
        return Path(text).expanduser() if text else None
