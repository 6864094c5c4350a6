"""Dialog to choose the models: the demo model, or FetalCLIP weights plus classifier and/or
segmenter bundles, and the device. It only collects the choice; loading (and any error about
the files) happens in the scoring worker, and errors come back as a message box."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from app.path_field import PathField
from fetaliqa_core.models.choice import ModelChoice

DEVICES = ("auto", "cpu", "cuda", "mps")


class ModelDialog(QDialog):
    def __init__(self, choice: ModelChoice, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.demo = QRadioButton("Demo model (small, trained on synthetic sweeps)")
        self.custom = QRadioButton("FetalCLIP with my bundles")
        group = QButtonGroup(self)
        group.addButton(self.demo)
        group.addButton(self.custom)
        self.base = PathField("FetalCLIP_weights.pt (empty: the weights the bundle names)",
                              "Choose FetalCLIP weights", pick_dir=False,
                              file_filter="Weights (*.pt *.pth *.safetensors);;All files (*)", min_width=360)
        self.cls = PathField("classifier bundle folder (optional)", "Choose a bundle folder", min_width=360)
        self.seg = PathField("segmenter bundle folder (optional; same folder for a joint bundle)",
                             "Choose a bundle folder", min_width=360)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.precision = QComboBox()
        self.precision.addItems(["auto", "bf16", "fp32"])
        tip = ("auto: bf16 on a GPU and on CPUs with bf16 matrix instructions unless it "
               "measures slower there, fp32 elsewhere")
        from fetaliqa_core.models.device import SLOW_BF16, cpu_lacks_bf16

        if cpu_lacks_bf16():  # the choice is remembered: say what bf16 costs before it is made
            tip += f". bf16 on the CPU: {SLOW_BF16} (a GPU is not affected)"
        self.precision.setToolTip(tip)

        form = QFormLayout()
        form.addRow("FetalCLIP weights", self.base)
        form.addRow("Classifier", self.cls)
        form.addRow("Segmenter", self.seg)
        self.custom_box = QWidget()
        self.custom_box.setLayout(form)

        self.cascade = QCheckBox("Cascade: a small student scores every frame, these models re-score its "
                                 "candidate frames")
        self.cascade.setToolTip("Much faster on a CPU. The answer (best frames, AC) comes only from the frames "
                                "these models re-scored; the curve marks them.")
        self.student = PathField("student bundle folder (fetaliqa distill; empty with the demo model: the demo "
                                 "student)", "Choose a student bundle folder", min_width=360)
        self.cascade.toggled.connect(self.student.setEnabled)

        dev_row = QFormLayout()
        dev_row.addRow("Device", self.device)
        dev_row.addRow("Precision", self.precision)
        dev_row.addRow("", self.cascade)
        dev_row.addRow("Student", self.student)
        note = QLabel("auto: CUDA GPU, then Apple GPU, then CPU. On a CPU a full FetalCLIP model "
                      "scores about one frame per second; frames near the cursor come first.")
        note.setObjectName("dim")
        note.setWordWrap(True)

        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        lay = QVBoxLayout(self)
        lay.addWidget(self.demo)
        lay.addWidget(self.custom)
        lay.addWidget(self.custom_box)
        lay.addLayout(dev_row)
        lay.addWidget(note)
        lay.addWidget(buttons)

        self.demo.toggled.connect(lambda on: self.custom_box.setEnabled(not on))
        is_demo = choice.model == "demo" and not (choice.cls or choice.seg)
        (self.demo if is_demo else self.custom).setChecked(True)
        self.custom_box.setEnabled(not is_demo)
        for fld, value in ((self.base, choice.base), (self.cls, choice.cls), (self.seg, choice.seg)):
            fld.set_text(value)
        idx = self.device.findText(choice.device or "auto")
        self.device.setCurrentIndex(max(idx, 0))
        self.precision.setCurrentIndex(max(self.precision.findText(choice.precision or "auto"), 0))
        self.cascade.setChecked(bool(choice.cascade))
        self.student.set_text(choice.student)
        self.student.setEnabled(bool(choice.cascade))

    def choice(self) -> ModelChoice:
        device = self.device.currentText()
        precision = None if self.precision.currentText() == "auto" else self.precision.currentText()
        cascade = self.cascade.isChecked()
        student = self.student.value() if cascade else None
        if self.demo.isChecked():
            return ModelChoice(model="demo", device=device, precision=precision, cascade=cascade, student=student)
        return ModelChoice(model=None, cls=self.cls.value(), seg=self.seg.value(),
                           base=self.base.value(), device=device, precision=precision, cascade=cascade,
                           student=student)
