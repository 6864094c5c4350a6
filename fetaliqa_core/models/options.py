"""The model options shared by every command that runs models, and the one rule that turns them
into a :class:`~fetaliqa_core.models.choice.ModelChoice`.

    --model demo|demo-student | --cls BUNDLE --seg BUNDLE [--base WEIGHTS]   which models
    --cascade [--student BUNDLE]                                   (commands that score: ``cascade``)
    --device auto|cpu|cuda|cuda:N|mps, --precision auto|bf16|fp32  where and in which number format
    --threshold P                                                  (commands that flag frames)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fetaliqa_core.errors import UsageError

#: Student backbones (timm names) with the feature stages the light decoder reads
#: (``models/student.py``); here so that building the command line imports no torch.
STUDENT_BACKBONES = {"mobilenetv3_large_100": (1, 2, 3, 4), "efficientvit_b0": (0, 1, 2, 3),
                     "efficientvit_b1": (0, 1, 2, 3), "fastvit_t8": (0, 1, 2, 3)}
DEFAULT_BACKBONE = "efficientvit_b0"

# what --device and --precision accept (this module imports no torch: commands' --help stays quick)
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N
PRECISION_CHOICES = ("auto", "bf16", "fp32")


def device_name(text: str) -> str:
    """argparse type: auto, cpu, cuda, cuda:N or mps (checked against this computer when loading)."""
    value = text.strip().lower()
    head, _, index = value.partition(":")
    if value in DEVICE_CHOICES or (head == "cuda" and index.isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is not a device; choose one of {', '.join(DEVICE_CHOICES)} "
                                     "or cuda:N")


def add_model_options(parser: argparse.ArgumentParser, *, bundles: bool = True, demo: bool = True,
                      precision: bool = True, threshold: bool = False, remembered: bool = False,
                      cascade: bool = False) -> None:
    """Declare the model options on ``parser``.

    bundles: --cls/--seg/--base (and --model demo where ``demo``); precision: --precision;
    threshold: --threshold (the classifier's operating point; default the bundle's own);
    remembered: the command falls back on the user's last choice, so --device has no default.
    """
    from fetaliqa_core.cli._args import probability

    g = parser.add_argument_group("models")
    if bundles:
        if demo:
            g.add_argument("--model", choices=["demo", "demo-student"], default=None,
                           help="the bundled demo model (the default when no bundle is given), or demo-student: "
                                "the small network distilled from it (classifier and segmenter in one pass)")
        g.add_argument("--cls", type=Path, metavar="BUNDLE", help="classifier (or joint) bundle folder")
        g.add_argument("--seg", type=Path, metavar="BUNDLE",
                       help="segmenter bundle folder (the same folder as --cls for a joint bundle)")
        g.add_argument("--base", type=Path, metavar="WEIGHTS",
                       help="FetalCLIP weights the bundles were trained on (FetalCLIP_weights.pt)")
    g.add_argument("--device", type=device_name, default=None if remembered else "auto",
                   help="where the models run: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps "
                        f"(default: auto{', or the last choice' if remembered else ''})")
    if precision:
        g.add_argument("--precision", default=None, choices=PRECISION_CHOICES,
                       help="number format of the models (default: auto = bf16 on CUDA and on CPUs with bf16 "
                            "matrix instructions unless a short measurement finds it slower, else fp32)")
    if cascade:
        g.add_argument("--cascade", action="store_true",
                       help="a student scores every frame first; the chosen models re-score its best runs of frames "
                            "per sweep, and the chosen frame and its AC come from them")
        g.add_argument("--student", type=Path, metavar="BUNDLE",
                       help="the cascade's student bundle (fetaliqa distill); default with the demo model: the demo "
                            "student")
    if threshold:
        g.add_argument("--threshold", type=probability, default=None, metavar="P",
                       help="the classifier's threshold on p_cls (default: the classifier bundle's own); a frame "
                            "is flagged when every model calls it: p_cls at or above this, and the segmenter's "
                            "mask at least 1 %% of the model input (p_seg >= 0.5); with a segmenter alone, its "
                            "threshold on p_seg (default 0.5, that same 1 %% rule)")


def model_choice_from_args(args: argparse.Namespace, *, remembered: bool = False):
    """The :class:`ModelChoice` the options of :func:`add_model_options` ask for.

    Bundles (--cls and/or --seg) win; without them the demo model. ``remembered``: with no model
    option at all, None (the caller keeps the user's last choice). --model demo with bundles, or
    --base without bundles, is a usage error.
    """
    from fetaliqa_core.models.choice import ModelChoice

    cls, seg, base = getattr(args, "cls", None), getattr(args, "seg", None), getattr(args, "base", None)
    model, device = getattr(args, "model", None), getattr(args, "device", None)
    precision = getattr(args, "precision", None)
    cascade, student = bool(getattr(args, "cascade", False)), getattr(args, "student", None)
    if (cls or seg) and model:
        raise UsageError(f"Give either --model {model} or --cls/--seg bundles, not both.")
    if student and not cascade:
        raise UsageError("--student names the cascade's student: add --cascade (or score with the student alone "
                         "as --cls BUNDLE --seg BUNDLE)")
    if cascade and model == "demo-student":
        raise UsageError("--cascade runs a student before the models you choose: use --model demo --cascade (the "
                         "demo student, then the demo model), not --model demo-student.")
    if cascade and (cls or seg) and not student:
        raise UsageError("--cascade with your own bundles needs their student: add --student BUNDLE "
                         "(made by fetaliqa distill from them)")
    if base and not (cls or seg):
        raise UsageError("--base names the FetalCLIP weights for bundles: add --cls and/or --seg.")
    if cls or seg:
        return ModelChoice(model=None, cls=cls, seg=seg, base=base, device=device or "auto", precision=precision,
                           cascade=cascade, student=student)
    if remembered and not (model or device or precision or cascade):
        return None
    return ModelChoice(model=model or "demo", device=device or "auto", precision=precision, cascade=cascade,
                       student=student)
