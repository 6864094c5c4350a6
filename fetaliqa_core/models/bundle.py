"""Model bundles: what training writes and the app loads, unchanged.

A bundle is a directory::

    manifest.json          BundleManifest (format version, task, head, base config + its SHA-256,
                           LoRA settings, threshold, preprocessing, metrics, project version, files)
    adapter.safetensors    LoRA tensors (absent when the model has no LoRA)
    head.safetensors       the classifier unit and/or the segmentation decoder

Only trained tensors are stored (a few MB); the frozen FetalCLIP base comes from the user's own
weights file, identified by its SHA-256, and a bundle refuses to load on any other base. Bundles
trained on a random base (tests, the demo) record ``random:<seed>`` and a fingerprint of the
tower's tensors, and rebuild that base themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fetaliqa_core import __version__, paths, validate
from fetaliqa_core.validate import shown_value
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_path, safetensors_save_file, write_json
from fetaliqa_core.models.base import (RANDOM_PREFIX, BaseInfo, _info, architecture, build_vision_tower,
                                       file_sha256, load_base_config, tensors_sha256)
from fetaliqa_core.models.classifier import FetalCLIPClassifier
from fetaliqa_core.models.device import DeviceChoice, select_device
from fetaliqa_core.models.joint import FetalCLIPJoint
from fetaliqa_core.models.lora import LoraSettings
from fetaliqa_core.models.segmenter import (DECODER_BLOCKS, HEAD_KINDS, INIT_FILTERS, MASK_AREA_FRACTION,
                                            FetalCLIPSegmenter, label_masks, segmentation_probabilities)
from fetaliqa_core.models.student import StudentModel, check_spec
from fetaliqa_core.models.tasks import TASKS
from fetaliqa_core.preprocess import PREPROCESS_VERSION, preprocess_spec

FORMAT_VERSION = 2  # 2: distilled students (kind "student"); other bundles are still written as 1
STUDENT_FORMAT_VERSION = 2
KINDS = ("fetalclip", "student")
MANIFEST_FILE = "manifest.json"
ADAPTER_FILE = "adapter.safetensors"
HEAD_FILE = "head.safetensors"
DEFAULT_THRESHOLD = 0.5

AnyModel = FetalCLIPClassifier | FetalCLIPSegmenter | FetalCLIPJoint | StudentModel


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class BundleManifest:
    """The contents of ``manifest.json``."""

    task: str  # "cls" | "seg" | "joint"
    head: str  # "binary" | "3class" (segmentation head; "binary" for cls)
    base_config: str  # "fetalclip" | "tiny" | "custom"
    base_sha256: str  # of the FetalCLIP weights file trained on, or "random:<seed>"
    base_architecture: dict  # embed_dim + vision_cfg: must equal the base's
    lora: dict | None  # LoraSettings.to_dict(), or None
    threshold: float = DEFAULT_THRESHOLD  # operating point on p_cls (cls/joint)
    area_fraction: float = MASK_AREA_FRACTION  # segmentation quality call (seg/joint)
    init_filters: int = INIT_FILTERS  # UNETR decoder width (seg/joint)
    decoder_block: str = "res"  # decoder units: "res" (the project's) | "sepconv_bn" (the paper's reference)
    preprocess: dict = field(default_factory=preprocess_spec)
    metrics: dict = field(default_factory=dict)
    project_version: str = __version__
    created: str = field(default_factory=_now)
    base_fingerprint: str | None = None  # tensors of a random base (None for file bases)
    files: dict = field(default_factory=dict)  # file name -> sha256 (filled by save_bundle)
    description: str = ""
    format_version: int = 1
    # "fetalclip": LoRA + heads on a FetalCLIP-family base (base_* name that base); "student": a
    # distilled timm network holding all its weights (base_* then name the teacher's base)
    kind: str = "fetalclip"
    student: dict | None = None  # StudentModel.spec() (+ "teacher"), for kind "student"

    @property
    def is_student(self) -> bool:
        return self.kind == "student"

    @property
    def lora_settings(self) -> LoraSettings | None:
        return None if self.lora is None else LoraSettings.from_dict(self.lora)

    @property
    def n_classes(self) -> int:
        return {v: k for k, v in HEAD_KINDS.items()}[self.head]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> "BundleManifest":
        if not isinstance(data, dict):
            raise FetalIQAError(f"{source} must be a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise FetalIQAError(f"{source} has no 'format_version' of 1 or more: not a FetalIQA model bundle")
        if version > FORMAT_VERSION:
            raise FetalIQAError(f"{source} has format version {version}; this FetalIQA reads up to "
                                f"{FORMAT_VERSION}: update FetalIQA to use this bundle")
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("task", "head", "base_config", "base_sha256", "base_architecture", "lora")
                   if n not in data]
        if missing:
            raise FetalIQAError(f"{source} lacks {', '.join(missing)}: the bundle is incomplete; export it again")
        manifest = cls(**{k: v for k, v in data.items() if k in names})
        manifest.validate(source)
        return manifest

    def validate(self, source: str = "manifest") -> None:
        def bad(what: str) -> FetalIQAError:
            return FetalIQAError(f"{source}: {what}; the bundle is damaged or was not written by FetalIQA")

        if not isinstance(self.task, str) or self.task not in TASKS:  # (a list: "unhashable type")
            raise bad(f"task {shown_value(self.task)} is not one of {list(TASKS)}")
        if self.kind not in KINDS:
            raise bad(f"kind {shown_value(self.kind)} is not one of {list(KINDS)}")
        if self.is_student:
            if self.task != "joint" or self.lora is not None or self.format_version < STUDENT_FORMAT_VERSION:
                raise bad(f"a student bundle must have task 'joint', no LoRA and format version "
                          f">= {STUDENT_FORMAT_VERSION}")
            try:
                check_spec(self.student)
            except FetalIQAError as exc:
                raise bad(str(exc)) from exc
        elif self.student is not None:
            raise bad("only student bundles carry a 'student' object")
        if self.head not in HEAD_KINDS.values() or (not TASKS[self.task].has_seg and self.head != "binary"):
            raise bad(f"head {shown_value(self.head)} is not valid for task {shown_value(self.task)}")
        if not isinstance(self.base_sha256, str) or not (
                self.base_sha256.startswith(RANDOM_PREFIX) or len(self.base_sha256) == 64):
            raise bad(f"base_sha256 {shown_value(self.base_sha256)} is neither a SHA-256 nor 'random:<seed>'")
        if self.base_sha256.startswith(RANDOM_PREFIX) and \
                validate.parse_seed(self.base_sha256[len(RANDOM_PREFIX):]) is None:
            raise bad(f"base_sha256 {self.base_sha256[:40]!r} has no seed (digits 0-9, at most "
                      f"{validate.MAX_SEED})")
        if not isinstance(self.base_config, str):
            raise bad("base_config must be a string")
        if not isinstance(self.base_architecture, dict):
            raise bad("base_architecture must be an object")
        problem = validate.vision_config_problem(self.base_architecture)
        if problem:
            raise bad(f"base_architecture: {problem}")
        try:
            load_base_config(self.base_architecture)
        except FetalIQAError as exc:
            raise bad(f"base_architecture is not a FetalCLIP-style config ({exc})") from exc
        if self.lora is not None:
            if isinstance(self.lora, dict) and validate.lora_problem(self.lora):
                raise bad(validate.lora_problem(self.lora))
            self.lora_settings  # noqa: B018 (validates)
        for name in ("threshold", "area_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0 \
                    or math.isnan(value):
                raise bad(f"{name} {shown_value(value)} is not a number in [0, 1]")
        if not validate.int_in_range(self.init_filters, validate.INIT_FILTERS_RANGE):
            lo, hi = validate.INIT_FILTERS_RANGE
            raise bad(f"init_filters {shown_value(self.init_filters)} is not an integer in {lo}-{hi}")
        if self.decoder_block not in DECODER_BLOCKS:
            raise bad(f"decoder_block {shown_value(self.decoder_block)} is not one of {sorted(DECODER_BLOCKS)}")
        if not isinstance(self.preprocess, dict) or not isinstance(self.metrics, dict) \
                or not isinstance(self.files, dict):
            raise bad("preprocess, metrics and files must be objects")
        for name in self.files:
            problem = validate.bundle_file_problem(name, (ADAPTER_FILE, HEAD_FILE))
            if problem:
                raise FetalIQAError(f"{source}: {problem}")
            if not isinstance(self.files[name], str):
                raise bad(f"the checksum of {name} is not text")


def manifest_for(model: AnyModel, base: BaseInfo, threshold: float = DEFAULT_THRESHOLD,
                 metrics: dict | None = None, description: str = "") -> BundleManifest:
    """A manifest describing ``model`` trained on ``base``."""
    lora = model.encoder.lora
    fingerprint = None
    if base.is_random:
        fingerprint = _random_base_fingerprint(base)
    return BundleManifest(
        task=model.task, head=model.head_kind, base_config=base.config_name, base_sha256=base.sha256,
        base_architecture=base.architecture, lora=None if lora is None else lora.to_dict(),
        threshold=float(threshold), init_filters=_init_filters(model), decoder_block=_decoder_block(model),
        metrics=dict(metrics or {}), base_fingerprint=fingerprint, description=description)


def _decoder_block(model: nn.Module) -> str:
    seg = getattr(model, "seg", None)
    return str(seg.decoder.block) if seg is not None else "res"


def student_manifest(model: StudentModel, teacher: BundleManifest, threshold: float = DEFAULT_THRESHOLD,
                     metrics: dict | None = None, description: str = "", teacher_info: dict | None = None
                     ) -> BundleManifest:
    """A manifest for a distilled student; ``base_*`` name the base of the teacher it learnt from."""
    spec = dict(model.spec())
    if teacher_info:
        spec["teacher"] = dict(teacher_info)
    return BundleManifest(
        task="joint", head=model.head_kind, base_config=teacher.base_config, base_sha256=teacher.base_sha256,
        base_architecture=teacher.base_architecture, lora=None, threshold=float(threshold),
        metrics=dict(metrics or {}), base_fingerprint=teacher.base_fingerprint, description=description,
        format_version=STUDENT_FORMAT_VERSION, kind="student", student=spec)


def _init_filters(model: nn.Module) -> int:
    seg = getattr(model, "seg", None)
    return int(seg.decoder.init_filters) if seg is not None else INIT_FILTERS


def _random_base_fingerprint(base: BaseInfo) -> str:
    from fetaliqa_core.models.base import random_base

    seed = int(base.sha256[len(RANDOM_PREFIX):])
    visual, _ = random_base(base.architecture, seed=seed)
    return tensors_sha256(visual.state_dict())


# ----------------------------------------------------------------------------------- saving
def _head_state(model: AnyModel) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, module in model.head_modules().items() for k, v in module.state_dict().items()}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_safetensors_header(path: Path) -> None:
    """Rewrite a safetensors file's header with its metadata's keys sorted, so that the same
    tensors give the same bytes (and the manifest the same ``files`` SHA-256) in every process:
    safetensors writes the metadata in an order that changes from one process to the next.

    Layout: 8-byte little-endian header length N, N bytes of JSON, then the data. The JSON keeps
    its length (the same keys and values, reordered), padded with spaces as safetensors pads it,
    so N and every data offset stay as written."""
    import struct

    with open(path, "r+b") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        if isinstance(header.get("__metadata__"), dict):
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > n:  # never: the same content, as compact as written
            raise FetalIQAError(f"{path}: its header could not be written in a fixed order")
        fh.seek(8)
        fh.write(text + b" " * (n - len(text)))


def save_bundle(model: AnyModel, out_dir: str | Path, manifest: BundleManifest) -> Path:
    """Write ``model``'s trained tensors and ``manifest`` into ``out_dir`` (created).

    The model must not have its LoRA merged (its adapters are what is saved).
    """
    out = Path(out_dir)
    encoder = getattr(model, "encoder", None)
    if encoder is not None and encoder.merged:
        raise FetalIQAError("this model's LoRA is merged into its base; save the bundle before merging")
    lora = encoder.lora if encoder is not None else None
    if manifest.task != model.task or manifest.head != model.head_kind or \
            manifest.lora != (None if lora is None else lora.to_dict()) or \
            manifest.is_student != isinstance(model, StudentModel):
        raise FetalIQAError("the manifest does not describe this model (task, head, kind or LoRA settings differ)")
    manifest.validate()
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    tensors = {ADAPTER_FILE: encoder.lora_state_dict() if encoder is not None else {}, HEAD_FILE: _head_state(model)}
    for name, state in tensors.items():
        target = out / name
        if not state:
            target.unlink(missing_ok=True)
            continue
        with atomic_path(target) as tmp:
            # (a full disk as an OSError, said in one line; the file gets plain permissions: 0600
            # as written, colleagues could not load the bundle)
            safetensors_save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, tmp,
                                  metadata={"format": "pt", "fetaliqa_bundle": str(FORMAT_VERSION)})
            canonical_safetensors_header(tmp)
        files[name] = _sha256_file(target)
    manifest.files = files
    write_json(out / MANIFEST_FILE, manifest.to_dict(), sort_keys=True)
    return out


# ----------------------------------------------------------------------------------- loading
@dataclass
class Prediction:
    """Model outputs for one batch, float32 on the CPU.

    p_cls: ``(B,)`` P(frame good for AC) from the classifier unit, or None.
    seg_prob: ``(B, C, 224, 224)``: C=1 P(abdomen); C=3 softmax over background/optimal/suboptimal.
    """

    p_cls: torch.Tensor | None = None
    seg_prob: torch.Tensor | None = None


@dataclass(eq=False)
class LoadedModel:
    """A bundle ready for inference: LoRA merged, eval mode, on its device in its dtype."""

    model: nn.Module
    manifest: BundleManifest
    bundle_hash: str
    device: torch.device
    dtype: torch.dtype
    base: BaseInfo
    path: Path
    batch_size: int = 8

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    def predict(self, x: torch.Tensor) -> Prediction:
        """``x``: ``(B, 3, 224, 224)`` from :func:`fetaliqa_core.preprocess.preprocess_frames`."""
        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype, non_blocking=True)
            cls_logits, seg_logits = TASKS[self.task].split(self.model(x))
            return Prediction(
                p_cls=None if cls_logits is None else torch.sigmoid(cls_logits.float())[:, 0].cpu(),
                seg_prob=None if seg_logits is None else segmentation_probabilities(seg_logits).cpu())

    def predict_labels(self, x: torch.Tensor) -> "LabelPrediction":
        """Like :meth:`predict`, but the segmentation comes back as ``(B, 224, 224)`` uint8
        label masks (see :func:`~fetaliqa_core.models.segmenter.label_masks`), computed on the
        model's device: 1 byte per pixel crosses to the host instead of C float32 values."""
        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype, non_blocking=True)
            cls_logits, seg_logits = TASKS[self.task].split(self.model(x))
            for logits in (cls_logits, seg_logits):
                if logits is not None and not bool(torch.isfinite(logits).all()):
                    parts = getattr(self, "parts", None)  # two bundles on one base: name both
                    where = " / ".join(str(part[1]) for part in parts) if parts else str(self.path)
                    raise FetalIQAError(
                        f"model bundle {where}: its outputs are not numbers (NaN or infinite) on these "
                        "frames, so its scores would be meaningless: its weights are damaged or out of range. "
                        "Export the bundle again.")
            p_cls = None if cls_logits is None else torch.sigmoid(cls_logits.float())[:, 0].cpu()
            if seg_logits is None:
                return LabelPrediction(p_cls=p_cls)
            labels = label_masks(segmentation_probabilities(seg_logits))
            return LabelPrediction(p_cls=p_cls, labels=labels.cpu(), n_classes=int(seg_logits.shape[1]))


@dataclass
class LabelPrediction:
    """p_cls: ``(B,)`` float32 or None; labels: ``(B, 224, 224)`` uint8 or None (CPU tensors)."""

    p_cls: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    n_classes: int = 0


@contextlib.contextmanager
def _readable(bundle: Path) -> Iterator[None]:
    """A bundle, or a file in it, that this user may not read is said so: it was refused with
    the advice for a file being written ("choose a folder you can write to"), but a bundle is
    only read."""
    try:
        yield
    except PermissionError as exc:
        which = f" ({exc.filename})" if exc.filename and Path(exc.filename) != bundle else ""
        raise FetalIQAError(f"model bundle {bundle} cannot be read{which}: permission denied. Ask for read "
                            "access to it, or copy the bundle folder to one of yours and give that") from None


def read_manifest(bundle_dir: str | Path) -> BundleManifest:
    """Read and validate ``manifest.json`` of a bundle directory."""
    bundle = Path(bundle_dir).expanduser()
    with _readable(bundle):
        return _read_manifest(bundle)


def _read_manifest(bundle: Path) -> BundleManifest:
    path = bundle / MANIFEST_FILE
    if bundle.is_symlink() and not bundle.exists():  # (a link that loops is no "directory" either)
        from fetaliqa_core.paths import missing_path

        raise FetalIQAError("model bundle " + missing_path(bundle, "Give the folder that holds manifest.json."))
    if not bundle.is_dir():
        raise FetalIQAError(f"model bundle {bundle} is not a directory; give the folder that holds manifest.json")
    if not path.is_file() and path.exists():  # (a folder, or a link to /dev/zero, was "no manifest.json")
        raise FetalIQAError(f"{bundle}: its {MANIFEST_FILE} is not a regular file (a folder, pipe or device); "
                            "copy the whole bundle folder again")
    if path.is_symlink() and not path.exists():  # (a link to itself was "no manifest.json")
        from fetaliqa_core.paths import missing_path

        raise FetalIQAError(missing_path(path, "Copy the whole bundle folder again."))
    if not path.is_file():
        raise FetalIQAError(f"{bundle} is not a model bundle: it has no {MANIFEST_FILE}")
    with open(path, "rb"):  # (not readable: said by _readable, not as "the bundle is damaged")
        pass
    data = validate.read_json_bounded(path, "the bundle's manifest", "The bundle is damaged: export it again.")
    try:
        return BundleManifest.from_dict(data, source=str(path))
    except TypeError as exc:
        raise FetalIQAError(f"{path} has malformed fields ({exc}); export the bundle again") from exc


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    validate.check_safetensors(path, "the model file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FetalIQAError(f"{path} is not a readable safetensors file ({exc}); the bundle is damaged") from exc
    validate.check_finite(tensors, str(path), "the model file")
    return tensors


def check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """``state`` (tensors read from a bundle file) must hold exactly the keys of ``expected`` (the
    model's own tensors, real or on the meta device), each of the same shape, and floating-point
    numbers wherever the model's are: an integer tensor would be cast without a word, a missing
    one would leave the model's own values in place."""
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise FetalIQAError(f"{source} does not fit the model: {len(missing)} missing "
                            f"({', '.join(sorted(missing)[:3])}), {len(unexpected)} unexpected "
                            f"({', '.join(sorted(unexpected)[:3])}); the bundle is damaged or was made for "
                            "other settings: export it again")
    for key, want in expected.items():
        have = state[key]
        if tuple(have.shape) != tuple(want.shape):
            raise FetalIQAError(f"{source}: {key} has shape {list(have.shape)}, the model expects "
                                f"{list(want.shape)}; the bundle does not fit this model: export it again")
        if want.is_floating_point() and not have.is_floating_point():
            raise FetalIQAError(f"{source}: {key} holds {str(have.dtype).replace('torch.', '')} values where the "
                                "model has real numbers; the bundle is damaged: export it again")


def _load_head(model: AnyModel, state: dict[str, torch.Tensor], source: str) -> None:
    check_tensors(state, _head_state(model), source)
    with torch.no_grad():
        for name, module in model.head_modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)


def _new_model(manifest: BundleManifest, visual: nn.Module | None) -> AnyModel:
    if manifest.is_student:
        return StudentModel(manifest.student["backbone"], manifest.n_classes, manifest.student["decoder_width"])
    return TASKS[manifest.task].build(visual, manifest.lora_settings, manifest.n_classes, manifest.init_filters,
                                      decoder_block=manifest.decoder_block)


def bundle_hash(bundle_dir: str | Path) -> str:
    """SHA-256 over the manifest and weight files (identifies a bundle in results caches)."""
    bundle = Path(bundle_dir)
    digest = hashlib.sha256()
    for name in (MANIFEST_FILE, ADAPTER_FILE, HEAD_FILE):
        path = bundle / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


#: Larger than any FetalCLIP-family checkpoint (ViT-L/14 with its text tower: ~1.7 GB in fp32).
MAX_BASE_WEIGHTS_BYTES = 8 * 10**9


def load_bundle(bundle_dir: str | Path, base_weights: str | Path | None = None,
                device: str | torch.device | DeviceChoice = "auto",
                base_config: str | Path | None = None, merge: bool = True) -> LoadedModel:
    """Load a bundle for inference on the base it was trained on.

    Args:
        bundle_dir: the bundle directory.
        base_weights: the FetalCLIP weights file; its SHA-256 must equal the manifest's. Ignored
            for bundles trained on a random base (they rebuild that base from its seed).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a :class:`DeviceChoice`.
        base_config: if given (e.g. ``--base-config``), must agree with the manifest's.
        merge: fold LoRA into the base (the default; ``False`` only for tests and diagnostics).
    """
    bundle = Path(bundle_dir).expanduser()
    choice = select_device(device)
    manifest, config, where = checked_bundle(bundle, base_config)
    visual, base = base_for(manifest, config, base_weights, choice, where)
    model = _new_model(manifest, visual)
    if manifest.lora is not None:
        model.encoder.load_lora_state_dict(_read_tensors(bundle / ADAPTER_FILE), source=f"{bundle / ADAPTER_FILE}")
    elif ADAPTER_FILE in manifest.files and (bundle / ADAPTER_FILE).is_file() and _read_tensors(bundle / ADAPTER_FILE):
        # adapters the manifest does not describe would be left out without a word: another model
        raise FetalIQAError(f"{where}: the manifest gives no LoRA settings (lora: null) but {ADAPTER_FILE} holds "
                            "adapter weights: the model would run without them. Export the bundle again.")
    _load_head(model, _read_tensors(bundle / HEAD_FILE), source=str(bundle / HEAD_FILE))
    model.to(choice.device)
    if merge and not manifest.is_student:
        model.encoder.merge_lora()  # in fp32, then cast: merging in bf16 would round twice
    model.requires_grad_(False)
    model.eval()
    model.to(dtype=choice.dtype)
    if choice.device.type == "cuda" and getattr(model, "seg", None) is not None:
        model.seg.use_channels_last(True)
    return LoadedModel(model=model, manifest=manifest, bundle_hash=bundle_hash(bundle), device=choice.device,
                       dtype=choice.dtype, base=base, path=bundle, batch_size=choice.batch_size)


def checked_bundle(bundle: Path, base_config: str | Path | None = None) -> tuple[BundleManifest, dict, str]:
    """The manifest of a bundle, its base config and a name for messages, after checking the
    config, the preprocessing version and the files against the manifest."""
    with _readable(bundle):
        return _checked_bundle(bundle, base_config)


def _checked_bundle(bundle: Path, base_config: str | Path | None) -> tuple[BundleManifest, dict, str]:
    manifest = read_manifest(bundle)
    where = f"model bundle {bundle}"

    # the base config the bundle was trained on
    config = load_base_config(manifest.base_architecture)
    if base_config is not None:
        given = load_base_config(base_config)
        if architecture(given) != architecture(config):
            raise FetalIQAError(f"{where} was trained on base config {manifest.base_config!r}, but {base_config!r} "
                                f"was given: pass --base-config {manifest.base_config} or another bundle")
    if manifest.base_config in ("fetalclip", "tiny") and \
            architecture(load_base_config(manifest.base_config)) != architecture(config):
        raise FetalIQAError(f"{where}: its base config {manifest.base_config!r} differs from the one bundled "
                            "with this FetalIQA; the bundle belongs to another FetalIQA version")

    version = manifest.preprocess.get("version")
    if version != PREPROCESS_VERSION:
        raise FetalIQAError(f"{where} was trained with preprocessing version {shown_value(version)}, this FetalIQA uses "
                            f"{PREPROCESS_VERSION!r}: its scores would be off; retrain or use a matching FetalIQA")
    _refuse_other_preprocessing(manifest.preprocess, where)

    # files present and unchanged
    for name, sha in manifest.files.items():
        path = bundle / name
        problem = validate.bundle_file_problem(name, (ADAPTER_FILE, HEAD_FILE))
        if problem:
            raise FetalIQAError(f"{where}: {problem}")
        if not path.is_file() and path.exists():  # (a link to /dev/zero or a pipe was "missing")
            raise FetalIQAError(f"{where}: {name} is not a regular file (a folder, pipe or device); copy the whole "
                                "bundle folder again")
        if not path.is_file():
            raise FetalIQAError(f"{where} is incomplete: {name} is missing; copy the whole bundle folder")
        if _sha256_file(path) != sha:
            raise FetalIQAError(f"{where}: {name} does not match its manifest (changed or damaged); export it again")
    needed = [HEAD_FILE] + ([ADAPTER_FILE] if manifest.lora is not None else [])
    for name in needed:
        if name not in manifest.files:
            raise FetalIQAError(f"{where} is incomplete: the manifest lists no {name}")
    _check_tensor_headers(bundle, manifest, config, needed)
    return manifest, config, where


class _Described:
    """A tensor as a safetensors header describes it (shape and dtype, no data), for
    :func:`check_tensors`."""

    _NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
              "U32": "uint32", "I64": "int64", "U64": "uint64"}

    def __init__(self, entry: dict) -> None:
        self.shape = tuple(entry["shape"])
        self.dtype = self._NAMES.get(entry["dtype"], entry["dtype"])  # (as torch names it, in messages)

    def is_floating_point(self) -> bool:
        return self.dtype not in self._NAMES.values()


def _check_tensor_headers(bundle: Path, manifest: BundleManifest, config: dict, names: list[str]) -> None:
    """The bundle's own tensor files checked against themselves and against the model its
    manifest describes (names, shapes, kinds), from their headers alone and before the base is
    loaded: a damaged head.safetensors was refused only after 16-24 s and ~930 MB of loading
    the base. The expected tensors come from the model built on the meta device (no memory);
    a student has no base to wait for, and is checked as it loads."""
    headers = {name: validate.check_safetensors(bundle / name, "the model file") for name in names}
    if manifest.is_student:
        return
    from fetaliqa_core.models.base import _new_visual

    with torch.device("meta"):
        model = _new_model(manifest, _new_visual(config))
    expected = {HEAD_FILE: _head_state(model)}
    if manifest.lora is not None:
        expected[ADAPTER_FILE] = model.encoder.adapter_params()
    for name, want in expected.items():
        check_tensors({k: _Described(v) for k, v in headers[name].items()}, want, str(bundle / name))


def _refuse_other_preprocessing(recorded: dict, where: str) -> None:
    """Scoring prepares frames as :func:`preprocess_spec` says, whatever a manifest records: one
    recording another input size, padding or normalisation (448 pixels, stretched, a mean of
    1e19) loaded without a word, and its model was served frames unlike those it was trained on.
    A setting the manifest does not record is taken as the version's."""
    for key, served in preprocess_spec().items():
        if key == "version" or key not in recorded or _same_setting(recorded[key], served):
            continue
        raise FetalIQAError(f"{where} was trained with preprocessing {key} {shown_value(recorded[key])}, this FetalIQA "
                            f"prepares frames with {shown_value(served)}: its scores would be off; retrain or use a "
                            "matching FetalIQA")


def _same_setting(recorded: Any, served: Any) -> bool:
    """Whether a manifest's preprocessing setting is the one served (numbers as JSON gives them back)."""
    if isinstance(served, (list, tuple)):
        return (isinstance(recorded, (list, tuple)) and len(recorded) == len(served)
                and all(_same_setting(r, s) for r, s in zip(recorded, served)))
    if isinstance(served, (int, float)) and not isinstance(served, bool):
        return (isinstance(recorded, (int, float)) and not isinstance(recorded, bool)
                and math.isclose(recorded, served, rel_tol=1e-6))
    return recorded == served


def base_for(manifest: BundleManifest, config: dict, base_weights, choice: DeviceChoice, where: str
             ) -> tuple[nn.Module | None, BaseInfo]:
    """The fp32 tower a bundle was trained on, checked (a student holds all its weights: None)."""
    if manifest.is_student:
        visual, base = None, _info(config, manifest.base_sha256)
    elif manifest.base_sha256.startswith(RANDOM_PREFIX):
        seed = int(manifest.base_sha256[len(RANDOM_PREFIX):])
        if not manifest.base_fingerprint:  # every bundle trained on a random base records its tensors' hash
            raise FetalIQAError(f"{where} names random base {manifest.base_sha256} without the fingerprint of its "
                                "tensors that FetalIQA writes with one: the manifest was edited, and the bundle "
                                "may belong to another base. Export or train it again.")
        visual, base = build_vision_tower(config, None, device=choice.device, dtype=torch.float32, seed=seed)
        if tensors_sha256(visual.state_dict()) != manifest.base_fingerprint:
            raise FetalIQAError(f"{where} was trained on random base {manifest.base_sha256}, which this installation "
                                "does not reproduce (different PyTorch initialisation); retrain or export it again")
    else:
        if base_weights is None:
            base_weights = _bundled_demo_base(manifest.base_sha256)  # trained on the demo's own base
        if base_weights is None:
            raise FetalIQAError(f"{where} needs the FetalCLIP base weights it was trained on (SHA-256 "
                                f"{manifest.base_sha256[:12]}...): pass --base FetalCLIP_weights.pt")
        weights = Path(base_weights).expanduser()
        if not weights.is_file():
            what = ("is not a regular file (a folder, pipe or device)" if weights.exists() else
                    "is a link to nothing readable (its target is missing, or the link leads back to itself)"
                    if weights.is_symlink() else "does not exist")
            raise FetalIQAError(f"base weights file {weights} {what}; give the path of FetalCLIP_weights.pt")
        size = weights.stat().st_size
        if size > MAX_BASE_WEIGHTS_BYTES:  # hashing it alone would take minutes
            raise FetalIQAError(f"base weights file {weights} is {size / 1e9:.0f} GB, far more than FetalCLIP's "
                                "weights (~1.7 GB); give the path of FetalCLIP_weights.pt")
        sha = file_sha256(weights)
        if sha != manifest.base_sha256:
            raise FetalIQAError(f"{where} was trained on base weights with SHA-256 {manifest.base_sha256[:12]}..., "
                                f"but {weights} has {sha[:12]}...: use the FetalCLIP weights file the bundle was "
                                "trained on")
        visual, base = build_vision_tower(config, weights, device=choice.device, dtype=torch.float32)
    return visual, base


DEMO_DIR_NAME = "demo"


DEMO_BASE_FILE = "base_tiny.pt"
DEMO_STUDENT_DIR = "student"


def _bundled_demo_base(sha256: str) -> Path | None:
    """The bundled demo base (``resources/demo/base_tiny.pt``) when it is the base ``sha256``
    names: a bundle trained on it needs no ``--base`` (the file's hash is checked as any base's)."""
    path = paths.resources_dir() / DEMO_DIR_NAME / DEMO_BASE_FILE
    try:
        return path if path.is_file() and file_sha256(path) == sha256 else None
    except OSError:
        return None


def demo_student(device: str | torch.device | DeviceChoice = "auto") -> LoadedModel:
    """The bundled demo student (``resources/demo/student``): distilled from the demo classifier and
    segmenter by ``fetaliqa distill`` on synthetic sweeps (see ``resources/README.md``)."""
    path = paths.resources_dir() / DEMO_DIR_NAME / DEMO_STUDENT_DIR
    if not (path / MANIFEST_FILE).is_file():
        raise FetalIQAError(f"demo student {path} is missing from this installation; reinstall FetalIQA "
                            "or distil it again (resources/README.md)")
    return load_bundle(path, device=device)


def demo_models_dir() -> Path:
    """``resources/demo`` after checking that the demo classifier and segmenter are there."""
    root = paths.resources_dir() / DEMO_DIR_NAME
    for path in (root / "cls", root / "seg"):
        if not (path / MANIFEST_FILE).is_file():
            raise FetalIQAError(f"demo model {path} is missing from this installation; reinstall FetalIQA "
                                "or train the demo models (resources/README.md)")
    return root


def demo_models(device: str | torch.device | DeviceChoice = "auto") -> tuple[LoadedModel, LoadedModel]:
    """The bundled demo classifier and segmenter (``resources/demo/cls`` and ``resources/demo/seg``)
    on the demo's own tiny base (``resources/demo/base_tiny.pt``), all trained by this project's
    scripts on synthetic sweeps (see ``resources/README.md``)."""
    root = demo_models_dir()
    found = [root / "cls", root / "seg"]
    base = root / DEMO_BASE_FILE
    weights = base if base.is_file() else None
    return (load_bundle(found[0], base_weights=weights, device=device),
            load_bundle(found[1], base_weights=weights, device=device))
