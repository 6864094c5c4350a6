"""The models the user chose, and loading them.

:func:`load_models` is the one place that turns the user's choice (the demo model, or bundles
plus the FetalCLIP weights they were trained on, a device and a number format) into loaded
models; the command line, the app and the benchmark all go through it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fetaliqa_core.errors import FetalIQAError


@dataclass
class ModelChoice:
    """What the user asked to score with."""

    model: str | None = "demo"  # "demo", "demo-student", or None when bundles are given
    cls: Path | None = None
    seg: Path | None = None
    base: Path | None = None
    device: str = "auto"
    precision: str | None = None  # "auto" | "bf16" | "fp32"; None: $FETALIQA_PRECISION or auto
    cascade: bool = False  # a student scores every frame, the models above re-score its candidates
    student: Path | None = None  # the cascade's student bundle (default with the demo: the demo student)

    def describe(self) -> str:
        if self.model == "demo-student":
            return "demo student (distilled from the demo model, trained on synthetic sweeps)"
        student = f"student {_student_name(self.student)}" if self.student else "the demo student"
        if self.model == "demo" and not (self.cls or self.seg):
            text = "demo model (tiny, trained on synthetic sweeps)"
            return text + (f", cascade after {student}" if self.cascade else "")
        alone = _student_alone(self.cls, self.seg)
        if alone:  # a student given as both models is one small network, not a classifier and a segmenter
            parts = [alone]
        else:
            parts = []
            if self.cls:
                parts.append(f"classifier {Path(self.cls).name}")
            if self.seg:
                parts.append(f"segmenter {Path(self.seg).name}")
        if self.cascade:
            parts.append(f"cascade after {student}")
        return ", ".join(parts)


def _student_name(folder) -> str:
    """A student bundle's name for people: its run folder (``distill --out RUN`` writes
    RUN/bundle, so "bundle" alone would name every student alike; a folder named "student" was
    labelled "student student")."""
    path = Path(folder)
    return (path.parent.name if path.name in ("bundle", "student") and path.parent.name else path.name) or str(folder)


def _student_alone(cls, seg) -> str:
    """"student NAME (its backbone)" when ``cls`` and ``seg`` are one distilled student bundle
    (read from its manifest), else "": it was labelled "classifier bundle, segmenter bundle" like
    a teacher pair."""
    from fetaliqa_core.models.bundle import read_manifest

    try:
        if not cls or not seg or not _same_path(Path(cls), Path(seg)):
            return ""
        manifest = read_manifest(Path(cls))
    except (FetalIQAError, OSError, ValueError):
        return ""  # loading says what is wrong
    if not manifest.is_student:
        return ""
    spec = manifest.student if isinstance(manifest.student, dict) else {}
    backbone = spec.get("backbone")
    what = f"{backbone}, distilled" if isinstance(backbone, str) and backbone else "distilled"
    return f"student {_student_name(cls)} ({what})"


@dataclass
class LoadedModels:
    cls: object | None
    seg: object | None
    choice: ModelChoice
    device: str
    device_label: str = ""  # e.g. "CPU (2 threads, bf16: AVX512_BF16, bf16 matmul 2.3x fp32)"
    precision: str = ""  # "bf16" | "fp32" | ...
    student: object | None = None  # the cascade's student (a loaded joint bundle), when cascading
    precision_reason: str = ""  # why this number format, words that stay the same run to run (summary.json)
    precision_warning: str = ""  # set where the forced format is slow here (bf16 on a CPU without bf16 instructions)

    def describe(self) -> str:
        """For people: the models and where they run, with why this number format, and for a
        classifier and a segmenter whether they share one encoder pass (:func:`encoder_note`)."""
        note = encoder_note(self)
        return f"{self.choice.describe()} on {self.device_label or self.device}" + (f"; {note}" if note else "")

    def short(self) -> str:
        """:meth:`describe` in a few words, for a status bar: the models' names (``demo`` for the
        demonstration models), the device and the number format."""
        c = self.choice
        if c.model in ("demo", "demo-student") and not (c.cls or c.seg):
            names = "demo student" if c.model == "demo-student" else "demo"
        else:
            # a training run writes RUN/bundle: the run's name tells bundles apart
            names = " + ".join((Path(p).parent.name if Path(p).name == "bundle" else Path(p).name) or str(p)
                               for p in (c.cls, c.seg) if p)
        if c.cascade:
            names += " (cascade)"
        fmt = f" {self.precision}" if self.precision else ""
        # a forced bf16 that is slow here is said where the eye falls, not only in the tooltip
        slow = " (slow on this CPU)" if self.precision_warning else ""
        return f"{names} · {self.device.upper() if self.device == 'cpu' else self.device}{fmt}{slow}"

    def record(self) -> str:
        """For files (``summary.json``): the models, the device and the number format, without
        the measurements behind the choice, so the same set-up always writes the same text."""
        fmt = f", {self.precision}" if self.precision else ""
        return f"{self.choice.describe()} on {self.device}{fmt}"


def model_base(model) -> str | None:
    """The base weights a loaded model ran on: the SHA-256 of the file, ``random:<seed>`` for a
    random tower, None for a student (its loaded base info names its teacher's base, which it
    never loads)."""
    if model is None or getattr(getattr(model, "manifest", None), "is_student", False):
        return None
    return getattr(getattr(model, "base", None), "sha256", None)


def encoder_passes(models) -> int | None:
    """Encoder passes per batch of frames for the classifier and the segmenter: 1 where one
    loaded model gives both (a joint bundle, a student, a pair sharing one base:
    ``models/shared.py``), 2 where they run as two models; None without a model."""
    loaded = {id(m) for m in (getattr(models, "cls", None), getattr(models, "seg", None)) if m is not None}
    return len(loaded) or None


def _base_name(digest: str) -> str:
    return digest if digest.startswith("random:") else f"{digest[:12]}..."


def encoder_note(models) -> str:
    """For a classifier and a segmenter given as two bundles: whether they share one encoder pass
    per batch or run as two models, and why; "" otherwise. Two models cost two passes and two
    towers in memory: a pair on two random bases (test models) ran so at 3.78 GB where the
    same pair on one base needed 2.47 GB, and nothing said so."""
    cls, seg = getattr(models, "cls", None), getattr(models, "seg", None)
    if cls is None or seg is None:
        return ""
    if cls is seg:
        if not getattr(cls, "parts", None):
            return ""  # one bundle with both heads (a joint bundle, a student): nothing to share
        return "classifier and segmenter on one base: one encoder pass per batch"
    a, b = model_base(cls), model_base(seg)
    if a is not None and a == b:
        gpu = str(getattr(models, "device", "")).startswith("cuda")
        why = " (this GPU has room for both, and runs them faster so)" if gpu else ""
        return f"classifier and segmenter on one base, loaded as two models{why}: two encoder passes per batch"
    if a is None or b is None:
        return "classifier and segmenter are two networks (a student has its own): two encoder passes per batch"
    return (f"classifier and segmenter on different bases ({_base_name(a)}, {_base_name(b)}): two encoder passes "
            "per batch, and two towers in memory where a pair on one base holds one")


def _check_bases(cls_dir: Path | None, seg_dir: Path | None, base) -> bool:
    """What the bundles' manifests say of their base, read once: refuses --base given for bundles
    none of which runs on a weights file (a student holds its own tower; a bundle trained on a
    random base rebuilds it: it was ignored without a word, while ``--model demo-student --base``
    was refused), and a classifier and a segmenter trained on two different weights files (one
    scoring run has one --base: each was refused in turn, naming the other file, and the advice
    went round in a circle). Returns whether a classifier and a segmenter given apart can share
    one base (:func:`~fetaliqa_core.models.shared.can_share`)."""
    from fetaliqa_core.models.bundle import RANDOM_PREFIX, read_manifest
    from fetaliqa_core.models.shared import can_share

    try:
        cls_m = read_manifest(cls_dir) if cls_dir is not None else None
        seg_m = read_manifest(seg_dir) if seg_dir is not None else None
    except FetalIQAError:
        return False  # the ordinary loading says what is wrong
    given = [m for m in (cls_m, seg_m) if m is not None]
    if base is not None and given and all(m.is_student or m.base_sha256.startswith(RANDOM_PREFIX) for m in given):
        raise FetalIQAError(f"--base {base} is used by none of these bundles (a student holds its own tower; "
                            "a bundle trained on a random base is a test model that rebuilds it): leave --base out.")
    if cls_m is None or seg_m is None:
        return False
    # (a student runs its own tower: the base it records is its teacher's; a random base is a test's)
    if not (cls_m.is_student or seg_m.is_student) and cls_m.base_sha256 != seg_m.base_sha256 \
            and not any(m.base_sha256.startswith(RANDOM_PREFIX) for m in (cls_m, seg_m)):
        raise FetalIQAError(f"the classifier bundle {cls_dir} was trained on base weights with SHA-256 "
                            f"{cls_m.base_sha256[:12]}... and the segmenter bundle {seg_dir} on {seg_m.base_sha256[:12]}...: "
                            "one scoring run uses one base (--base). Train both on the same FetalCLIP weights file, "
                            "or score with each bundle alone.")
    return can_share(cls_m, seg_m)


# A GPU with at least this much memory holds two merged copies of the base: the pair then runs as
# two merged models, faster than one base with both adapters unmerged (an H200, real architecture,
# batch 64: 904 frames/s against 664; 3.3 GB against 2.8 GB of GPU memory).
SEPARATE_ON_GPU_BYTES = 8 * 2**30


def share_base(device) -> bool:
    """Whether a classifier and a segmenter on the same base are loaded on one copy of it
    (``models/shared.py``): where memory is what counts (the CPU, Apple MPS, a GPU of under
    :data:`SEPARATE_ON_GPU_BYTES`); on a larger GPU two merged models run faster."""
    if device.device.type != "cuda":
        return True
    import torch

    try:
        total = torch.cuda.get_device_properties(device.device).total_memory
    except (RuntimeError, AssertionError, ValueError):
        return True
    return total < SEPARATE_ON_GPU_BYTES


def _same_path(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder; a link that loops names none (resolving it
    raised "Symlink loop" in a traceback: the loading then says what is wrong with it)."""
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _load_pair(cls_dir: Path | None, seg_dir: Path | None, base, device, one_base: bool | None = None):
    """The classifier and the segmenter bundles (either may be None) as ``(cls, seg)``: one joint
    bundle as one model for both; two on the same base (``one_base``, or None: as their manifests
    say) as one copy of it with one encoder pass where :func:`share_base` holds (models/shared.py);
    else each loaded as itself."""
    from fetaliqa_core.models import bundle as bundle_mod

    joint = cls_dir is not None and seg_dir is not None and _same_path(seg_dir, cls_dir)
    shareable = _check_bases(cls_dir, None if joint else seg_dir, base)
    if cls_dir is not None and seg_dir is not None and not joint and share_base(device) \
            and (one_base if one_base is not None else shareable):
        from fetaliqa_core.models.shared import load_shared

        pair = load_shared(cls_dir, seg_dir, base_weights=base, device=device)
        return pair, pair
    cls = None if cls_dir is None else bundle_mod.load_bundle(cls_dir, base_weights=base, device=device)
    if joint:
        return cls, cls  # one joint bundle: one encoder pass gives both
    return cls, None if seg_dir is None else bundle_mod.load_bundle(seg_dir, base_weights=base, device=device)


def check_roles(cls, seg) -> None:
    """Refuse a bundle given in the other's role (a segmenter as classifier, or the reverse), in
    one line (:class:`FetalIQAError`)."""
    from fetaliqa_core.models.tasks import TASKS

    if cls is not None and not TASKS[cls.task].has_cls:
        raise FetalIQAError(f"The bundle given as classifier is a '{cls.task}' bundle; choose a classifier bundle.")
    if seg is not None and not TASKS[seg.task].has_seg:
        raise FetalIQAError(f"The bundle given as segmenter is a '{seg.task}' bundle; choose a segmenter bundle.")


def load_models(choice: ModelChoice, words: str = "cli") -> LoadedModels:
    """Load the classifier and/or segmenter the user chose (FetalIQAError on any problem).

    ``words``: where the choice was made, for what the errors tell the user to do: "cli" (the
    command line's options) or "window" (the app's Models… dialog, which has no options to pass)."""
    from fetaliqa_core.models import bundle as bundle_mod
    from fetaliqa_core.models.device import select_device

    window = words == "window"
    device = select_device(choice.device, choice.precision, words=words)
    if choice.model == "demo-student" and not (choice.cls or choice.seg):
        if choice.cascade:
            raise FetalIQAError("--cascade runs a student before the models you choose: use --model demo "
                                "--cascade (the demo student, then the demo model), not --model demo-student.")
        cls = seg = bundle_mod.demo_student(device=device)
    elif choice.model == "demo" and not (choice.cls or choice.seg):
        root = bundle_mod.demo_models_dir()  # classifier and segmenter on one tiny base
        cls, seg = _load_pair(root / "cls", root / "seg", root / bundle_mod.DEMO_BASE_FILE, device, one_base=True)
    else:
        if not (choice.cls or choice.seg):
            raise FetalIQAError("No model given: choose Demo model in Models…, or a Classifier and/or Segmenter "
                                "bundle folder." if window else
                                "No model given: pass --model demo, or --cls and/or --seg bundle folders.")
        cls, seg = _load_pair(Path(choice.cls) if choice.cls else None, Path(choice.seg) if choice.seg else None,
                              choice.base, device)
        # Checked here, not only when scoring starts: the window took models that load for its
        # new choice, then showed the scoring engine's refusal and re-judged the old answer under
        # them (and kept them for the next start); refused here, the previous models stay.
        check_roles(cls, seg)
    student = None
    if choice.cascade:
        if choice.student is not None:
            student = bundle_mod.load_bundle(Path(choice.student), device=device)
        elif choice.model == "demo" and not (choice.cls or choice.seg):
            student = bundle_mod.demo_student(device=device)
        else:
            raise FetalIQAError("Cascade needs a student bundle for these models: choose its folder as the "
                                "Student in Models… (made by fetaliqa distill from them), or untick Cascade."
                                if window else "--cascade needs a student bundle for these models: add --student "
                                "BUNDLE (made by fetaliqa distill from them)")
        if not student.manifest.is_student:
            raise FetalIQAError(f"{choice.student} is not a student bundle (made by fetaliqa distill); "
                                + ("choose the student's folder as the Student in Models…" if window
                                   else "give the student for --student"))
    return LoadedModels(cls=cls, seg=seg, choice=choice, device=str(device.device), device_label=device.description,
                        precision=device.precision, precision_reason=device.precision_record,
                        precision_warning=device.warning, student=student)



#: Said wherever a number comes from the bundled demonstration model.
DEMO_NOTICE = ("Demonstration model trained on synthetic data only: not for clinical use; "
               "its numbers are not measurements of a patient.")


RANDOM_BASE_NOTICE = ("Test model trained on a randomly initialised base (not FetalCLIP, not pretrained): not for "
                      "clinical use; its numbers are not measurements of a patient.")


def on_random_base(model) -> bool:
    """The model adapts a randomly initialised tower (``random:<seed>``): a test run of the
    pipeline, whatever it was trained on; its numbers are not a trained model's."""
    digests = {getattr(getattr(model, "base", None), "sha256", None),
               getattr(getattr(model, "manifest", None), "base_sha256", None)}
    return any(isinstance(d, str) and d.startswith("random:") for d in digests)


def is_demo_bundle(model) -> bool:
    """The model is one of the bundled demonstration models: loaded from ``resources/demo``, or a
    copy of one elsewhere (the same manifest and weights), which must carry the same notice; or a
    student distilled from one (it learnt nothing but their outputs)."""
    path = getattr(model, "path", None)
    if path is not None and _under_demo(path, getattr(model, "bundle_hash", None)):
        return True
    return _taught_by_demo(getattr(model, "manifest", None)) or on_demo_base(model)


def on_demo_base(model) -> bool:
    """The model runs on the demonstration base (the tiny tower trained here on synthetic sweeps,
    or an earlier stage of it): whatever its adapters learnt, and whatever its manifest says (a
    copy of a demo bundle with its description edited has another hash), it has never seen an
    ultrasound frame through anything but that base, and its numbers are the demo's kind."""
    digests = {getattr(getattr(model, "base", None), "sha256", None),
               getattr(getattr(model, "manifest", None), "base_sha256", None)}
    return bool(digests & _demo_base_hashes())


@functools.lru_cache(maxsize=1)
def _demo_base_hashes() -> frozenset[str]:
    """SHA-256 of the shipped demonstration base and of each earlier stage it was trained from
    (``resources/demo/base_tiny.json``)."""
    import json

    from fetaliqa_core import paths
    from fetaliqa_core.models.bundle import DEMO_DIR_NAME

    found: set[str] = set()
    try:
        record = json.loads((paths.resources_dir() / DEMO_DIR_NAME / "base_tiny.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return frozenset()
    while isinstance(record, dict):
        if isinstance(record.get("sha256"), str) and len(record["sha256"]) == 64:
            found.add(record["sha256"])
        record = record.get("previous_stage")
    return frozenset(found)


def _taught_by_demo(manifest) -> bool:
    student = getattr(manifest, "student", None)
    teacher = student.get("teacher") if isinstance(student, dict) else None
    if not isinstance(teacher, dict):
        return False
    demo = _demo_hashes()
    return any(isinstance(teacher.get(key), str) and teacher[key] in demo
               for key in ("cls_bundle_sha256", "seg_bundle_sha256"))


def foreign_student_note(student, cls, seg) -> str:
    """One line when a cascade's student was not distilled from the teacher it runs before (the
    teacher bundles its manifest records differ from those given, or it records none), else "".
    The teacher re-scores only the runs the student flags: a student of other models misses
    frames this teacher would call, and nothing there is ever checked (one such case chose no
    frame where the teacher alone chose frame 79). The cascade still runs: it may be meant."""
    if student is None:
        return ""
    info = getattr(getattr(student, "manifest", None), "student", None)
    recorded = info.get("teacher") if isinstance(info, dict) else None
    recorded = recorded if isinstance(recorded, dict) else {}
    given = {key: bundle_part(model, role)[1] for key, role, model in
             (("cls", "classifier", cls), ("seg", "segmenter", seg)) if model is not None}
    # students distilled before each role's own bundle was recorded name a classifier and a
    # segmenter sharing one base by the pair's hash (models/shared.py; the demo student does)
    pair = (hashlib.sha256((given["cls"] + given["seg"]).encode()).hexdigest()
            if isinstance(given.get("cls"), str) and isinstance(given.get("seg"), str) else None)
    differ = [role for key, role in (("cls", "classifier"), ("seg", "segmenter"))
              if key in given and recorded.get(f"{key}_bundle_sha256") not in (given[key], pair)]
    if not differ:
        return ""
    name = _student_name(getattr(student, "path", None) or "student")
    recorded_pair = recorded.get("cls_bundle_sha256")
    if pair is None and isinstance(recorded_pair, str) and recorded_pair == recorded.get("seg_bundle_sha256"):
        # it records both teachers as the hash of the pair, which one teacher alone cannot form:
        # "other models" would be said of its own teacher (the demo student with the demo classifier)
        return (f"whether the student {name} was distilled from the {differ[0]} given cannot be checked: "
                "it records its two teachers as one pair, and only one was given")
    why = ("its manifest records no teacher" if not any(recorded.get(f"{k}_bundle_sha256") for k in ("cls", "seg"))
           else f"not the {' and '.join(differ)} given")
    return (f"the student {name} was distilled from other models ({why}): the teacher re-scores only the frames "
            "this student calls, so frames it misses are never checked")


def part_is_demo(model, role: str) -> bool:
    """The bundle playing ``role`` in a loaded model is a demonstration model (each bundle of a
    pair on one base on its own, as :func:`provenance` does)."""
    if getattr(model, "parts", None):
        path, digest = bundle_part(model, role)
        return (path is not None and _under_demo(path, digest)) or on_demo_base(model)
    return is_demo_bundle(model)


def bundle_part(model, role: str) -> tuple[Path | None, str | None]:
    """``(folder, SHA-256)`` of the bundle that plays ``role`` ("classifier" or "segmenter") in a
    loaded model: one of the two bundles of a pair sharing one base (``models/shared.py``, whose
    own hash covers both), else the model's own."""
    for part_role, part_path, part_hash in getattr(model, "parts", None) or ():
        if part_role == role:
            return Path(part_path), str(part_hash)
    path = getattr(model, "path", None)
    return (Path(path) if path is not None else None), getattr(model, "bundle_hash", None)


def _under_demo(path, bundle_hash: str | None = None) -> bool:
    from fetaliqa_core import paths
    from fetaliqa_core.models.bundle import DEMO_DIR_NAME

    try:
        Path(path).resolve().relative_to((paths.resources_dir() / DEMO_DIR_NAME).resolve())
    except ValueError:
        return bundle_hash is not None and bundle_hash in _demo_hashes()
    return True


@functools.lru_cache(maxsize=1)
def _demo_hashes() -> frozenset[str]:
    """The SHA-256 (manifest and weights) of every bundle shipped under ``resources/demo``."""
    from fetaliqa_core import paths
    from fetaliqa_core.models.bundle import DEMO_DIR_NAME, MANIFEST_FILE, bundle_hash

    root = paths.resources_dir() / DEMO_DIR_NAME
    if not root.is_dir():
        return frozenset()
    own = {bundle_hash(m.parent) for m in root.rglob(MANIFEST_FILE)}
    # a pair of them loaded on one base has a hash of its own (models/shared.py: of both hashes)
    pairs = {hashlib.sha256((a + b).encode()).hexdigest() for a in own for b in own}
    return frozenset(own | pairs)


def _bundle_entry(role: str, path, digest: str | None, demo_otherwise: bool, base: str | None) -> dict:
    """One bundle in :func:`provenance`: named ``demo/<folder>`` only when it is a shipped demo
    bundle (its folder, or the same content elsewhere); a demonstration model all the same when
    ``demo_otherwise`` (taught by one, or on the demonstration base); ``base_sha256``: the base
    it ran on (:func:`model_base`)."""
    shipped = path is not None and _under_demo(path, digest)
    name = (f"demo/{Path(path).name}" if shipped else Path(path).name) if path is not None else ""
    return {"role": role, "name": name, "sha256": str(digest if digest is not None else ""),
            "demo": shipped or demo_otherwise, "base_sha256": base}


def provenance(models) -> dict:
    """Where the numbers come from, for ``summary.json`` and reports: the app version and each
    bundle's role, name and SHA-256 (over its manifest and weights), and the demonstration
    model's notice when one of them is the demo."""
    from fetaliqa_core import __version__

    bundles = []
    seen = set()
    for role, m in (("classifier", getattr(models, "cls", None)), ("segmenter", getattr(models, "seg", None))):
        if m is None:
            continue
        if id(m) in seen:
            if not getattr(m, "parts", None):
                bundles[-1]["role"] = "classifier+segmenter"
            continue
        seen.add(id(m))
        parts = getattr(m, "parts", None)  # two bundles sharing one base (models/shared.py)
        if parts:
            bundles += [_bundle_entry(part_role, part_path, part_hash, on_demo_base(m), model_base(m))
                        for part_role, part_path, part_hash in parts]
            continue
        bundles.append(_bundle_entry(role, getattr(m, "path", None), getattr(m, "bundle_hash", None),
                                     _taught_by_demo(getattr(m, "manifest", None)) or on_demo_base(m), model_base(m)))
    demo = any(b["demo"] for b in bundles)
    random_base = not demo and any(on_random_base(m) for m in (getattr(models, "cls", None),
                                                                getattr(models, "seg", None)) if m is not None)
    student = getattr(models, "student", None)
    if student is not None:
        # a cascade's student chose the frames the models above re-scored; the numbers are theirs,
        # so it is listed (what ran) without making them a demonstration model's
        bundles.append(_bundle_entry("student (cascade)", getattr(student, "path", None),
                                     getattr(student, "bundle_hash", None),
                                     _taught_by_demo(getattr(student, "manifest", None)) or on_demo_base(student),
                                     model_base(student)))
    student_note = foreign_student_note(student, getattr(models, "cls", None), getattr(models, "seg", None))
    # a distilled student scoring without its teacher (no cascade): its answer is a first look
    # (units.STUDENT_ALONE_DOUBT), whoever taught it
    student_alone = student is None and any(
        getattr(getattr(m, "manifest", None), "is_student", False) is True
        for m in (getattr(models, "cls", None), getattr(models, "seg", None)) if m is not None)
    # the base weights the models ran on (the SHA-256 of the file; "random:<seed>" for a random
    # base; none for a student, which has a tower of its own): a bundle's hash does not name them.
    # The first model's (readers rely on it); each bundle's own is in its entry, as a classifier
    # and a segmenter on two random bases (test models) run each on its own
    first = next((m for m in (getattr(models, "cls", None), getattr(models, "seg", None)) if m is not None), None)
    base_hash = model_base(first)
    return {"app_version": __version__, "bundles": bundles, "base_sha256": base_hash, "demo": demo,
            "encoder_passes": encoder_passes(models), "encoder_note": encoder_note(models),
            "precision": getattr(models, "precision", "") or "",
            "precision_reason": getattr(models, "precision_reason", "") or "", "random_base": random_base, "notice": DEMO_NOTICE if demo else RANDOM_BASE_NOTICE if random_base else "",
            "student_note": student_note, "student_alone": student_alone}
