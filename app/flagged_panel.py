"""Flagged frames: the best frame of each sweep, the candidates and the disagreements.
Clicking a row moves the viewer to that frame."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from app import theme
from app.viewer_model import FlaggedFrames, ViewerModel
from app.window_tools import fmt_p, score_cuts

FRAME_ROLE = Qt.UserRole + 1
#: What makes a frame a candidate (flagged), as `fetaliqa score --threshold` and frames.csv say it.
CANDIDATES_RULE = ("Frames every model calls: p_cls at or above the threshold line, and the segmenter's mask "
                   "at least 1 % of its input (p_seg ≥ 0.5); with one model, its own call. The chosen frame is "
                   "one of them whose mask is shaped like an abdomen's outline, where there is one.")
DISAGREE_RULE = "Frames one model calls and the other does not (the classifier at the threshold line)."


class FlaggedPanel(QWidget):
    frame_chosen = Signal(int)

    def __init__(self, model: ViewerModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["frame", "sweep", "p_cls / p_seg"])
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setFocusPolicy(Qt.ClickFocus)
        self.tree.setColumnWidth(0, 130)
        self.tree.setColumnWidth(1, 110)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemActivated.connect(self._clicked)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tree)
        self._groups: dict[str, QTreeWidgetItem] = {}
        for key, title, colour in (("best", "Best frame per sweep", theme.BEST_COLOUR),
                                   ("candidates", "Candidates", theme.CANDIDATE_COLOUR),
                                   ("disagreements", "Models disagree", theme.DISAGREE_COLOUR)):
            item = QTreeWidgetItem([title])
            item.setForeground(0, QBrush(QColor(colour)))
            item.setFirstColumnSpanned(True)
            f = item.font(0)
            f.setBold(True)
            item.setFont(0, f)
            self.tree.addTopLevelItem(item)
            item.setFirstColumnSpanned(True)
            self._groups[key] = item
        # what puts a frame in each list, said where the list is shown (the answer and these lists
        # follow one rule: a frame the classifier does not call at the line is never a candidate)
        self._groups["candidates"].setToolTip(0, CANDIDATES_RULE)
        self._groups["disagreements"].setToolTip(0, DISAGREE_RULE)
        self._groups["best"].setExpanded(True)
        self._groups["disagreements"].setExpanded(True)
        self._shown: tuple | None = None

    def _clicked(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        frame = item.data(0, FRAME_ROLE)
        if frame is not None:
            self.frame_chosen.emit(int(frame))

    def _score(self, frame: int, cut: dict[str, float]) -> str:
        v = self.model.frame_values(frame)  # under the column's "p_cls / p_seg"
        return " / ".join(fmt_p(v[k], cut[k]) for k in ("p_cls", "p_seg"))

    def _row(self, frame: int, cut: dict[str, float], label: str | None = None) -> QTreeWidgetItem:
        k = self.model.sweep_index(frame)
        kind = self.model.sweep_kinds[k] if k < len(self.model.sweep_kinds) else ""
        kind = "" if kind == "unknown" else kind  # "unknown" says nothing: the number alone
        item = QTreeWidgetItem([label or str(frame), f"{k + 1} {kind}".strip(), self._score(frame, cut)])
        if kind:
            item.setToolTip(1, f"sweep {k + 1}, {kind}")
        item.setData(0, FRAME_ROLE, int(frame))
        return item

    def update_flags(self, flags: FlaggedFrames) -> None:
        """Rebuild the lists if they changed (cheap no-op otherwise)."""
        # (the threshold: the scores' digits are those that tell them from it)
        key = (tuple(flags.best), tuple(flags.best_passes), tuple(flags.candidates),
               tuple(flags.disagreements), tuple(flags.why_none), self.model.n_frames, self.model.threshold)
        if key == self._shown:
            return
        self._shown = key
        rows = any(b is not None for b in flags.best) or flags.candidates or flags.disagreements
        cut = score_cuts(self.model) if rows else {}  # (no scores to show: nothing imported for them)
        self.tree.setUpdatesEnabled(False)
        try:
            best = self._groups["best"]
            best.takeChildren()
            for k, (b, ok) in enumerate(zip(flags.best, flags.best_passes)):
                if b is None:
                    continue
                # a sweep without a chosen frame shows its highest-scored frame in brackets, dimmed,
                # and says so (summary.json's best_frame is -1 there)
                item = self._row(b, cut, f"{b}  ★" if b == flags.chosen else f"{b}" if ok else f"({b}) none")
                if not ok:
                    # the sweep's highest-scored frame, shown dimmed: nothing there is chosen, and why
                    why = flags.why_none[k] if k < len(flags.why_none) else ""
                    item.setForeground(0, QBrush(QColor(theme.TEXT_DIM)))
                    item.setToolTip(0, f"highest-scored frame of sweep {k + 1}; no frame chosen there: "
                                       f"{why or 'no frame above threshold'}")
                best.addChild(item)
            n_sweeps = sum(b is not None for b in flags.best)
            best.setText(0, f"Best frame per sweep ({sum(bool(ok) for ok in flags.best_passes)} of {n_sweeps})")
            for name, title in (("candidates", "Candidates"), ("disagreements", "Models disagree")):
                group = self._groups[name]
                group.takeChildren()
                frames = getattr(flags, name)
                group.addChildren([self._row(f, cut) for f in frames])
                group.setText(0, f"{title} ({len(frames)})")
        finally:
            self.tree.setUpdatesEnabled(True)

    def rows(self, group: str) -> list[int]:
        """Frames listed under a group (for tests and keyboard navigation)."""
        g = self._groups[group]
        return [int(g.child(i).data(0, FRAME_ROLE)) for i in range(g.childCount())]

    def item_for(self, group: str, frame: int) -> QTreeWidgetItem | None:
        g = self._groups[group]
        for i in range(g.childCount()):
            if int(g.child(i).data(0, FRAME_ROLE)) == frame:
                return g.child(i)
        return None
