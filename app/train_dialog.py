"""The "Train…" dialog: runs ``python -m training.train`` as a child process.

The run never blocks the event loop: a :class:`QProcess` streams the child's stdout and stderr
into a tail-limited log view, and the machine-readable lines that ``training.train`` prints on
stdout drive the progress bar::

    PROGRESS trial=1/1 epoch=2/5 step=10/100 loss=0.4123 frames_per_s=85.2
    VALIDATION trial=1/1 epoch=2/5 train_loss=0.41 val_loss=0.3012 f1=0.7120 best=1
    BUNDLE /abs/path/RUN/bundle

Cancel terminates the child and kills it after a grace period. A run that ends with a non-zero
exit code shows the child's own error message and the last lines of its log. A run that ends
with a bundle emits :attr:`TrainDialog.training_finished` and offers to load the bundle
(:attr:`TrainDialog.load_requested`); the main window applies it as the classifier and/or
segmenter through its usual model choice.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app import theme
from app.formats import format_duration
from app.path_field import PathField
from fetaliqa_core import paths
from fetaliqa_core.acouslic import IMAGES_SUBDIR
from fetaliqa_core.errors import FetalIQAError

TASKS = (("cls", "Classifier (cls)"), ("seg", "Segmenter (seg)"), ("joint", "Joint: classifier and segmenter in one"),
         ("distill", "Student distilled from the demo model (fetaliqa distill)"))
BASE_TINY = "tiny"
BASE_WEIGHTS = "weights"
DEVICES = ("auto", "cpu", "cuda", "mps")
VOLUME_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nii", ".nii.gz")
LOG_MAX_LINES = 5000  # the log view keeps this many lines (the oldest are dropped)
ERROR_TAIL_LINES = 8  # lines of the log quoted under an error
TERMINATE_GRACE_MS = 5000  # after terminate(), kill() if the child is still there
PROGRESS_SCALE = 1000  # the progress bar's range is 0..PROGRESS_SCALE

IDLE, RUNNING, CANCELLING, FINISHED, FAILED = "idle", "running", "cancelling", "finished", "failed"


# ------------------------------------------------------------------------------------------
# Values and parsing (no widgets)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainRequest:
    """One training run as the user set it up (paths absolute)."""

    task: str  # "cls" | "seg" | "joint"
    data: Path
    out: Path
    base_weights: Path | None = None  # FetalCLIP weights file; None: the tiny random base
    epochs: int = 5
    batch_size: int = 32
    device: str = "auto"
    all_sweeps: bool = False
    resume: bool = False

    def cli_args(self) -> list[str]:
        """The arguments of ``python -m training.train`` (``training.distill`` for "distill") for this run."""
        if self.task == "distill":
            return _distill_args(self)
        args = ["--task", self.task, "--data", str(self.data), "--out", str(self.out)]
        if self.base_weights is not None:
            args += ["--base", str(self.base_weights)]
        else:
            args += ["--base-config", BASE_TINY]
        args += ["--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--device", self.device,
                 "--no-progress-bar"]  # the dialog draws its own bar; tqdm's would clutter the log
        if self.all_sweeps:
            args.append("--all-sweeps")
        if self.resume:
            args.append("--resume")
        return args


CommandBuilder = Callable[[TrainRequest], tuple[str, list[str]]]


def default_command(request: TrainRequest) -> tuple[str, list[str]]:
    """``(program, arguments)`` that run the training module with this Python."""
    module = "training.distill" if request.task == "distill" else "training.train"
    return sys.executable, ["-m", module, *request.cli_args()]


def _distill_args(r: TrainRequest) -> list[str]:
    """A student learns the bundled demo classifier and segmenter on the chosen dataset."""
    demo = paths.resources_dir() / "demo"
    return ["--cls", str(demo / "cls"), "--seg", str(demo / "seg"), "--base", str(demo / "base_tiny.pt"),
            "--data", str(r.data), "--out", str(r.out), "--epochs", str(r.epochs), "--batch-size", str(r.batch_size),
            "--device", r.device]


@dataclass(frozen=True)
class TrainProgress:
    """One ``PROGRESS`` line. ``fraction`` is the share of all training steps done (0..1)."""

    trial: int
    n_trials: int
    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    loss: float
    fraction: float


def parse_fields(line: str) -> tuple[str, dict[str, str]]:
    """``"KIND a=1 b=2"`` -> ``("KIND", {"a": "1", "b": "2"})`` (words without ``=`` are skipped)."""
    words = line.strip().split()
    if not words:
        return "", {}
    fields: dict[str, str] = {}
    for w in words[1:]:
        key, sep, value = w.partition("=")
        if sep:
            fields[key] = value
    return words[0], fields


def _ratio(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    a, sep, b = text.partition("/")
    try:
        done, total = (int(a), int(b)) if sep else (int(a), 0)
    except ValueError:
        return None
    return (done, total) if total > 0 else None


def parse_progress(line: str) -> TrainProgress | None:
    """A ``PROGRESS`` line as printed by ``training.train``, or None for any other line."""
    kind, f = parse_fields(line)
    if kind != "PROGRESS":
        return None
    epoch, step = _ratio(f.get("epoch")), _ratio(f.get("step"))
    if epoch is None or step is None:
        return None
    trial = _ratio(f.get("trial")) or (1, 1)
    try:
        loss = float(f.get("loss", "nan"))
    except ValueError:
        loss = float("nan")
    (t, nt), (e, ne), (s, ns) = trial, epoch, step
    done = (t - 1) * ne + (e - 1) + min(s, ns) / ns
    fraction = min(max(done / (nt * ne), 0.0), 1.0)
    return TrainProgress(t, nt, e, ne, s, ns, loss, fraction)


def parse_bundle(line: str) -> str | None:
    """The path of a ``BUNDLE <path>`` line (paths may hold spaces), else None."""
    text = line.rstrip("\r\n")
    if text.startswith("BUNDLE "):
        path = text[len("BUNDLE "):].strip()
        return path or None
    return None


def validate_data_dir(text: str) -> Path:
    """The dataset folder, checked to be in the ACOUSLIC-AI layout (FetalIQAError if not)."""
    if not text.strip():
        raise FetalIQAError("Data folder: none chosen. Choose the dataset folder that holds "
                            "images/stacked_fetal_ultrasound/ (the ACOUSLIC-AI layout).")
    path = Path(text.strip()).expanduser()
    if not path.is_dir():
        # (a file chosen here was said not to exist)
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FetalIQAError(f"Data folder {path} {what}. Choose the dataset folder that holds "
                            "images/stacked_fetal_ultrasound/.")
    images = path / IMAGES_SUBDIR
    if not images.is_dir():
        raise FetalIQAError(
            f"Data folder {path} is not in the ACOUSLIC-AI layout: it has no {IMAGES_SUBDIR.as_posix()}/ folder. "
            "Choose the folder that holds images/, masks/ and circumferences/ "
            "(`fetaliqa synth --out DIR` writes a small one).")
    if not any(p.name.lower().endswith(VOLUME_SUFFIXES) for p in images.iterdir()):
        raise FetalIQAError(f"Data folder {path}: {IMAGES_SUBDIR.as_posix()}/ holds no .mha volumes. "
                            "Choose a dataset folder with sweeps in it.")
    return path.resolve()


def validate_out_dir(text: str, resume: bool) -> Path:
    """The run folder: new or empty (or, with ``resume``, one that holds a run)."""
    path = Path(text.strip()).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise FetalIQAError(f"Output folder {path} is a file. Choose a folder for the run.")
    holds_run = path.is_dir() and any(path.iterdir())
    if resume and not (path / "config.json").is_file():
        raise FetalIQAError(f"Output folder {path} holds no run to continue (no config.json). "
                            "Untick 'Continue the run in this folder' to start a new one.")
    if holds_run and not resume:
        raise FetalIQAError(f"Output folder {path} is not empty. Choose a new folder, or tick "
                            "'Continue the run in this folder' to resume the run it holds.")
    return path


def default_run_dir(task: str) -> Path:
    """A fresh run folder under the user data folder, named by task and time."""
    return paths.data_dir() / "runs" / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def _repo_root() -> Path | None:
    """The folder holding the ``training`` package when running from a source checkout."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "training" / "__init__.py").is_file() else None


# ------------------------------------------------------------------------------------------
# Widgets
# ------------------------------------------------------------------------------------------
class TrainDialog(QDialog):
    """Set up a training run, watch it, cancel it, load what it produced.

    Signals: ``state_changed(state)`` with one of ``idle``, ``running``, ``cancelling``,
    ``finished``, ``failed``; ``progress_changed(fraction)``; ``training_finished(bundle, base)``
    when a run ends with a bundle (``base``: the FetalCLIP weights it was trained on, or "");
    ``load_requested(bundle, base)`` when the user asks to load that bundle in the viewer.

    ``command`` maps a :class:`TrainRequest` to ``(program, arguments)``; the default runs
    ``sys.executable -m training.train``. ``interactive=False`` (scripts, tests) never opens a
    message box: the dialog cancels instead of asking, and does not offer to load.
    """

    state_changed = Signal(str)
    progress_changed = Signal(float)
    training_finished = Signal(str, str)
    load_requested = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, base_weights: str | Path | None = None,
                 device: str = "auto", command: CommandBuilder | None = None,
                 terminate_grace_ms: int = TERMINATE_GRACE_MS, interactive: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train a model")
        self.command = command or default_command
        self.terminate_grace_ms = int(terminate_grace_ms)
        self.interactive = interactive
        self.state = IDLE
        self.bundle_path: str | None = None
        self.request: TrainRequest | None = None
        self.progress: TrainProgress | None = None
        self.last_error = ""
        self._process: QProcess | None = None
        self._ended_process: QProcess | None = None  # the last run's, deleted when the next one ends
        self._buffers = {"out": "", "err": ""}
        self._tail: deque[str] = deque(maxlen=200)
        self._cancel_requested = False
        self._close_when_done = False
        self._started_at = 0.0
        self._first_progress: tuple[float, float] | None = None  # (time, fraction) of the first PROGRESS line
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)
        self._build(base_weights, device)
        self._set_state(IDLE)

    # -- construction ----------------------------------------------------------------------
    def _build(self, base_weights, device: str) -> None:
        self.task = QComboBox()
        for key, label in TASKS:
            self.task.addItem(label, key)
        self.data = PathField("dataset folder (ACOUSLIC-AI layout: images/stacked_fetal_ultrasound/…)",
                               "Choose the dataset folder")
        self.out = PathField(f"empty: a new folder under {paths.data_dir() / 'runs'}", "Choose the run folder")
        self.resume = QCheckBox("Continue the run in this folder (resume from its last checkpoint)")
        self.base = QComboBox()
        self.base.addItem("Tiny random base (quick test runs)", BASE_TINY)
        self.base.addItem("FetalCLIP weights file", BASE_WEIGHTS)
        self.weights = PathField("FetalCLIP_weights.pt", "Choose FetalCLIP weights", pick_dir=False,
                                  file_filter="Weights (*.pt *.pth *.safetensors);;All files (*)")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(5)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(32)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentIndex(max(self.device.findText(device or "auto"), 0))
        self.all_sweeps = QCheckBox("Train on every sweep (default: only sweeps with an AC value, as in the paper)")

        if base_weights:
            self.weights.set_text(base_weights)
            self.base.setCurrentIndex(1)
        self.base.currentIndexChanged.connect(self._base_changed)
        self._base_changed()

        form = QFormLayout()
        form.addRow("Task", self.task)
        form.addRow("Data folder", self.data)
        form.addRow("Output folder", self.out)
        form.addRow("", self.resume)
        form.addRow("Base", self.base)
        form.addRow("Weights", self.weights)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch)
        form.addRow("Device", self.device)
        form.addRow("", self.all_sweeps)
        self.form = QWidget()
        self.form.setLayout(form)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, PROGRESS_SCALE)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.status = QLabel("Set up a run and press Start.")
        self.status.setObjectName("dim")
        self.status.setWordWrap(True)
        # room for a message of three lines (a two-line one was cut at the top and bottom)
        self.status.setMinimumHeight(self.status.fontMetrics().lineSpacing() * 3 + 4)
        self.message = QLabel()  # validation problems and errors
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.message.setStyleSheet(f"color: {theme.DISAGREE_COLOUR};")
        self.message.hide()
        self.bundle_label = QLabel()
        self.bundle_label.setWordWrap(True)
        self.bundle_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.bundle_label.hide()

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_MAX_LINES)
        self.log.setLineWrapMode(QPlainTextEdit.NoWrap)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.Monospace)
        mono.setPointSize(9)
        self.log.setFont(mono)
        self.log.setMinimumHeight(180)
        self.log.setPlaceholderText("The training log appears here.")

        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.clicked.connect(self.cancel)
        self.load_button = QPushButton("Load into viewer")
        self.load_button.clicked.connect(self._load_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.close_button)

        lay = QVBoxLayout(self)
        lay.addWidget(self.form)
        lay.addWidget(self.progress_bar)
        lay.addWidget(self.status)
        lay.addWidget(self.message)
        lay.addWidget(self.bundle_label)
        lay.addWidget(self.log, 1)
        lay.addLayout(buttons)
        from app.window_tools import fitted_size

        self.resize(*fitted_size(self, (760, 720)))

    def _base_changed(self) -> None:
        self.weights.setEnabled(self.base.currentData() == BASE_WEIGHTS)

    # -- state -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None

    def _set_state(self, state: str) -> None:
        self.state = state
        busy = state in (RUNNING, CANCELLING)
        self.form.setEnabled(not busy)
        self.start_button.setEnabled(not busy)
        self.cancel_button.setEnabled(state == RUNNING)
        self.load_button.setVisible(state == FINISHED and bool(self.bundle_path))
        self.state_changed.emit(state)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    # -- starting --------------------------------------------------------------------------
    def build_request(self) -> TrainRequest:
        """The run the form describes, validated (FetalIQAError naming the field if not)."""
        data = validate_data_dir(self.data.text())
        task = str(self.task.currentData())
        out_text = self.out.text()
        if not out_text:
            out_text = str(default_run_dir(task))
            self.out.set_text(out_text)
        out = validate_out_dir(out_text, self.resume.isChecked())
        weights = None
        if self.base.currentData() == BASE_WEIGHTS:
            if not self.weights.text():
                raise FetalIQAError("Weights: no FetalCLIP weights file chosen. Choose FetalCLIP_weights.pt, "
                                    "or pick the tiny random base.")
            weights = Path(self.weights.text()).expanduser().resolve()
            if not weights.is_file():
                raise FetalIQAError(f"Weights file {weights} does not exist. Choose FetalCLIP_weights.pt.")
        return TrainRequest(task=task, data=data, out=out, base_weights=weights, epochs=self.epochs.value(),
                            batch_size=self.batch.value(), device=self.device.currentText(),
                            all_sweeps=self.all_sweeps.isChecked(), resume=self.resume.isChecked())

    def start(self) -> bool:
        """Validate the form and start the run; False (with the reason shown) if it cannot start."""
        if self.running:
            return False
        try:
            request = self.build_request()
        except FetalIQAError as exc:
            self._show_message(str(exc))
            self.status.setText("Not started.")
            return False
        program, args = self.command(request)
        self.request = request
        self.bundle_path = None
        self.progress = None
        self.last_error = ""
        self._first_progress = None
        self._cancel_requested = False
        self._close_when_done = False
        self._buffers = {"out": "", "err": ""}
        self._tail.clear()
        self._show_message("")
        self.bundle_label.hide()
        self.log.clear()
        self.log.appendPlainText("$ " + " ".join(_quote(a) for a in [program, *args]))

        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.SeparateChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        root = _repo_root()
        if root is not None:
            old = env.value("PYTHONPATH", "")
            env.insert("PYTHONPATH", str(root) + (("" if not old else (";" if sys.platform == "win32" else ":") + old)))
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(lambda p=proc: self._read(p, "out"))
        proc.readyReadStandardError.connect(lambda p=proc: self._read(p, "err"))
        proc.finished.connect(lambda code, status, p=proc: self._finished(p, code, status))
        proc.errorOccurred.connect(lambda err, p=proc: self._error(p, err))
        self._process = proc
        self._started_at = time.monotonic()
        self.progress_bar.setRange(0, 0)  # busy until the first PROGRESS line
        self.progress_bar.setFormat("")
        self.status.setText(f"Starting: {request.task} on {request.data.name} → {request.out}")
        self._set_state(RUNNING)
        proc.start(program, args)
        return True

    # -- output ----------------------------------------------------------------------------
    def _read(self, proc: QProcess, channel: str) -> None:
        if proc is not self._process:
            return
        raw = proc.readAllStandardOutput() if channel == "out" else proc.readAllStandardError()
        text = self._buffers[channel] + bytes(raw.data()).decode("utf-8", errors="replace")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, rest = text.split("\n")
        self._buffers[channel] = rest
        self._lines(lines, channel)

    def _flush(self, proc: QProcess) -> None:
        for channel in ("out", "err"):
            self._read(proc, channel)
            rest = self._buffers[channel]
            self._buffers[channel] = ""
            if rest:
                self._lines([rest], channel)

    def _lines(self, lines: list[str], channel: str) -> None:
        lines = [ln for ln in lines if ln.strip()]
        if not lines:
            return
        self._tail.extend(lines)
        self.log.appendPlainText("\n".join(lines))
        self._show_last_line()
        if channel != "out":
            return
        for ln in lines:
            prog = parse_progress(ln)
            if prog is not None:
                self._on_progress(prog)
                continue
            bundle = parse_bundle(ln)
            if bundle is not None:
                self.bundle_path = bundle
                continue
            kind, f = parse_fields(ln)
            if kind == "VALIDATION":
                metric = next((k for k in ("f1", "dice") if k in f), None)
                extra = f", {metric} {f[metric]}" if metric else ""
                self.status.setText(f"Epoch {f.get('epoch', '?')} validated: val loss {f.get('val_loss', '?')}{extra}"
                                    + (" (best so far)" if f.get("best") == "1" else ""))

    def _show_last_line(self) -> None:
        """Scroll to the log's last line, at its start: following the end of the text put the
        view at the end of its longest line (the log does not wrap), and the start of every line,
        where the child says what happened, was off to the left."""
        cursor = self.log.textCursor()
        cursor.movePosition(QTextCursor.End)
        cursor.movePosition(QTextCursor.StartOfBlock)
        self.log.setTextCursor(cursor)
        self.log.ensureCursorVisible()
        self.log.horizontalScrollBar().setValue(0)

    def _on_progress(self, prog: TrainProgress) -> None:
        now = time.monotonic()
        self.progress = prog
        if self._first_progress is None:
            self._first_progress = (now, prog.fraction)
        t0, f0 = self._first_progress
        eta = None
        if prog.fraction > f0 and now > t0:
            eta = (now - t0) / (prog.fraction - f0) * (1.0 - prog.fraction)
        if self.progress_bar.maximum() != PROGRESS_SCALE:
            self.progress_bar.setRange(0, PROGRESS_SCALE)
        self.progress_bar.setValue(int(round(prog.fraction * PROGRESS_SCALE)))
        trial = f"trial {prog.trial}/{prog.n_trials} · " if prog.n_trials > 1 else ""
        loss = f" · loss {prog.loss:.4g}" if math.isfinite(prog.loss) else ""
        left = format_duration(eta)
        self.progress_bar.setFormat(f"{trial}epoch {prog.epoch}/{prog.n_epochs} · step {prog.step}/{prog.n_steps}"
                                    f"{loss} · {prog.fraction:.0%}" + (f" · {left} left" if left else ""))
        if self.state == RUNNING and not self.status.text().startswith("Epoch"):
            self.status.setText("Training…")
        self.progress_changed.emit(prog.fraction)

    # -- ending ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the run: terminate the child, and kill it if it is still there after the grace period."""
        proc = self._process
        if proc is None or self.state == CANCELLING:
            return
        self._cancel_requested = True
        self.status.setText("Cancelling…")
        self._set_state(CANCELLING)
        if proc.state() == QProcess.NotRunning:
            return
        proc.terminate()
        self._kill_timer.start(self.terminate_grace_ms)

    def _kill(self) -> None:
        if self._process is not None and self._process.state() != QProcess.NotRunning:
            grace = self.terminate_grace_ms / 1000
            self.log.appendPlainText(f"(still running {grace:g} s after the stop request: killed)")
            self._show_last_line()
            self._process.kill()

    def _error(self, proc: QProcess, err) -> None:
        if proc is not self._process or err != QProcess.FailedToStart:
            return  # crashes and kills end in _finished
        program = proc.program()
        self._process = None
        self._kill_timer.stop()
        self._retire(proc)
        self._fail(f"Training could not start: {program} could not be run ({proc.errorString()}).")

    def _finished(self, proc: QProcess, code: int, status) -> None:
        if proc is not self._process:
            return
        self._flush(proc)
        self._process = None
        self._kill_timer.stop()
        self._retire(proc)
        elapsed = format_duration(time.monotonic() - self._started_at)
        if self._cancel_requested:
            self.progress_bar.setRange(0, PROGRESS_SCALE)
            self.progress_bar.setFormat("cancelled")
            out = self.request.out if self.request else ""
            kept = bool(out) and any(Path(out).glob("trial_*/checkpoints/*.pt"))
            self.status.setText(
                f"Training cancelled after {elapsed}. Finished epochs keep their checkpoints in {out}; tick "
                "'Continue the run in this folder' to resume it." if kept else
                f"Training cancelled after {elapsed}, before its first epoch ended: nothing to resume "
                "(start it again, in an empty folder).")
            self._set_state(IDLE)
        elif status == QProcess.NormalExit and code == 0 and self.bundle_path:
            self.progress_bar.setRange(0, PROGRESS_SCALE)
            self.progress_bar.setValue(PROGRESS_SCALE)
            self.progress_bar.setFormat("done")
            self.status.setText(f"Training finished in {elapsed}.")
            self.bundle_label.setText(f"<b>Bundle:</b> {self.bundle_path}")
            self.bundle_label.show()
            self._set_state(FINISHED)
            base = str(self.request.base_weights) if self.request and self.request.base_weights else ""
            self.training_finished.emit(self.bundle_path, base)
            if self.interactive and not self._close_when_done:
                self._offer_load()
        else:
            if status != QProcess.NormalExit:
                head = "Training stopped unexpectedly (the process crashed)."
            elif code == 0:
                head = "Training ended without reporting a bundle."
            else:
                head = f"Training failed (exit code {code})."
            self._fail(head)
        if self._close_when_done:
            self._close_when_done = False
            self.hide()

    def _retire(self, proc: QProcess) -> None:
        """Keep an ended process until the next run: deleting it from inside its own
        ``finished``/``errorOccurred`` emission is unsafe."""
        old, self._ended_process = self._ended_process, proc
        if old is not None and old is not proc:
            old.deleteLater()

    def _fail(self, head: str) -> None:
        tail = list(self._tail)[-ERROR_TAIL_LINES:]
        # the training CLI reports user errors as one "fetaliqa: ..." line: put it first
        reason = next((ln for ln in reversed(self._tail) if ln.startswith("fetaliqa:")), "")
        self.last_error = "\n".join([head, *([reason[len("fetaliqa:"):].strip()] if reason else [])])
        html = f"<b>{_esc(head)}</b>"
        if reason:
            html += f"<br>{_esc(reason[len('fetaliqa:'):].strip())}"
        if tail:
            html += ("<br>Last lines of the log:<pre style='margin:0'>" + _esc("\n".join(tail)) + "</pre>")
        self._show_message(html)
        # the message takes room from the log once laid out: its last lines (the error) stay in view
        QTimer.singleShot(0, self._show_last_line)
        self.progress_bar.setRange(0, PROGRESS_SCALE)
        self.progress_bar.setFormat("failed")
        self.status.setText("Training failed; the full log is below.")
        self._set_state(FAILED)

    # -- loading ---------------------------------------------------------------------------
    def _offer_load(self) -> None:
        answer = QMessageBox.question(
            self, "Training finished", f"The new model bundle is in\n{self.bundle_path}\n\nLoad it now?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        if answer == QMessageBox.Yes:
            self._load_clicked()

    def _load_clicked(self) -> None:
        if not self.bundle_path:
            return
        base = str(self.request.base_weights) if self.request and self.request.base_weights else ""
        self.load_requested.emit(self.bundle_path, base)
        self.status.setText("Bundle loaded into the viewer.")

    # -- closing ---------------------------------------------------------------------------
    def closeEvent(self, ev):  # noqa: N802
        if self.running and not self._confirm_stop():
            ev.ignore()
            return
        super().closeEvent(ev)

    def reject(self) -> None:  # Esc
        if self.running and not self._confirm_stop():
            return
        super().reject()

    def _confirm_stop(self) -> bool:
        """Asked when the dialog is closed mid-run: True to close (the run is being cancelled)."""
        return self.confirm_stop(self)

    def confirm_stop(self, parent: QWidget, closing: str = "") -> bool:
        """Asked before the run would end with what holds it (this dialog, or the main window,
        whose closing ends the child too): True when the user chose to stop it, and it is being
        stopped (terminated, killed after the grace period if it is still there; never waited for
        here). ``closing``: a sentence on what happens then. Not asked when not interactive."""
        if self.interactive:
            answer = QMessageBox.question(
                parent, "Stop training?",
                "Training is still running. Stop it? Finished epochs keep their checkpoints (resume later)."
                + (f" {closing}" if closing else ""),
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                return False
        self._close_when_done = True
        self.cancel()
        return True

    def shutdown(self, timeout_ms: int | None = None) -> None:
        """Stop a run now and wait for the child to end (used when the application closes)."""
        proc = self._process
        if proc is None:
            return
        grace = self.terminate_grace_ms if timeout_ms is None else int(timeout_ms)
        self._cancel_requested = True
        self._close_when_done = True
        if proc.state() != QProcess.NotRunning:
            proc.terminate()
            if not proc.waitForFinished(grace):
                proc.kill()
                proc.waitForFinished(grace)
        if self._process is proc:  # finished() was not delivered while waiting
            self._finished(proc, proc.exitCode(), proc.exitStatus())


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _quote(arg: str) -> str:
    return f'"{arg}"' if (not arg or any(c.isspace() for c in arg)) else arg
