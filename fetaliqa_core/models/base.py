"""FetalCLIP's vision tower: configs, building, loading a user's weights file.

FetalCLIP is an open_clip CLIP model described by a JSON config (``resources/fetalclip/``).
Only the vision tower runs in this product, so only the vision tower is ever built. The published
weights file (``FetalCLIP_weights.pt``) holds the full CLIP state dict (``visual.*``, the text
tower's keys and ``logit_scale``); the text part is checked for shape and then dropped.

Loading a real-size checkpoint builds the tower on the ``meta`` device (no memory, no random
initialisation) and then adopts the file's tensors with ``load_state_dict(assign=True)``.
Random bases (tests, the demo) are initialised properly from a seed.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fetaliqa_core import paths
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import write_json

CONFIG_FILES = {"fetalclip": "FetalCLIP_config.json", "tiny": "tiny_config.json"}
# ``--base-config`` values users may type, as shown in hints
CONFIG_NAMES = tuple(CONFIG_FILES)
RANDOM_PREFIX = "random:"


# ----------------------------------------------------------------------------------- configs
def load_base_config(name_or_path: str | Path | dict) -> dict:
    """A FetalCLIP-family open_clip config as a dict.

    ``"fetalclip"`` (the real ViT-L/14 model), ``"tiny"`` (8 layers, width 128: tests and the
    demo), a path to a JSON file of the same form, or a dict (returned as a copy).
    """
    if isinstance(name_or_path, dict):
        config = json.loads(json.dumps(name_or_path))
        source = "the given config"
    else:
        key = str(name_or_path)
        path = paths.resources_dir() / "fetalclip" / CONFIG_FILES[key.lower()] if key.lower() in CONFIG_FILES \
            else Path(key).expanduser()
        source = str(path)
        if not path.is_file():
            raise FetalIQAError(
                f"base config {key!r} not found: use one of {', '.join(CONFIG_NAMES)} or the path of a "
                "FetalCLIP-style config JSON file")
        from fetaliqa_core.validate import read_json_bounded

        # bounded in size and nesting (a 1.2 GB file was read whole, 200,000 levels a RecursionError)
        config = read_json_bounded(path, "the base config", "Give a FetalCLIP config file (fetalclip or tiny).")
    _validate_config(config, source)
    return config


def _validate_config(config: Any, source: str) -> None:
    if not isinstance(config, dict):
        raise FetalIQAError(f"base config {source} must be a JSON object")
    vision = config.get("vision_cfg")
    if not isinstance(config.get("embed_dim"), int) or not isinstance(vision, dict):
        raise FetalIQAError(f"base config {source} needs an integer 'embed_dim' and a 'vision_cfg' object")
    for key in ("layers", "width", "patch_size", "image_size"):
        if not isinstance(vision.get(key), int) or vision[key] <= 0:
            raise FetalIQAError(
                f"base config {source}: vision_cfg.{key} must be a positive integer (a ViT; ResNet and "
                "timm towers are not supported)")
    if vision.get("timm_model_name"):
        raise FetalIQAError(f"base config {source}: timm vision towers are not supported, only open_clip ViTs")
    text = config.get("text_cfg", {})
    # the text tower is built (and never run) to read FetalCLIP's checkpoint: its sizes must be sizes
    if not isinstance(text, dict) or any(not isinstance(text[k], int) or isinstance(text[k], bool) or not 0 < text[k] <= 1 << 20
                                         for k in ("layers", "width", "heads", "context_length", "vocab_size") if k in text):
        raise FetalIQAError(f"base config {source}: text_cfg's layers, width, heads, context_length and vocab_size "
                            "must be positive integers; give a FetalCLIP-family config (fetalclip or tiny)")
    from fetaliqa_core import validate

    problem = validate.vision_config_problem(config)
    if problem:
        raise FetalIQAError(f"base config {source}: {problem}; give a FetalCLIP-family config "
                            "(fetalclip or tiny)")
    validate.check_vision_memory(config, f"base config {source}")


def architecture(config: dict) -> dict:
    """The part of a config that fixes the vision tower's tensors (compared when loading bundles)."""
    return {"embed_dim": config["embed_dim"], "vision_cfg": dict(sorted(config["vision_cfg"].items())),
            "quick_gelu": bool(config.get("quick_gelu", False))}


def config_name(config: dict) -> str:
    """``"fetalclip"`` / ``"tiny"`` when the config is one of the bundled ones, else ``"custom"``."""
    for name in CONFIG_NAMES:
        if architecture(load_base_config(name)) == architecture(config):
            return name
    return "custom"


def block_count(config: dict) -> int:
    return int(config["vision_cfg"]["layers"])


# ----------------------------------------------------------------------------------- building
@dataclass(frozen=True)
class BaseInfo:
    """Which base a vision tower was built from (goes into bundle manifests)."""

    config_name: str  # "fetalclip" | "tiny" | "custom"
    sha256: str  # of the weights file, or "random:<seed>"
    embed_dim: int  # pooled, projected embedding size (768 for FetalCLIP)
    width: int  # token width (1024 for FetalCLIP)
    layers: int  # transformer blocks (24 for FetalCLIP)
    architecture: dict
    weights_path: str | None = None

    @property
    def is_random(self) -> bool:
        return self.sha256.startswith(RANDOM_PREFIX)

    def to_dict(self) -> dict:
        return asdict(self)


def _new_visual(config: dict) -> nn.Module:
    """Construct the open_clip VisionTransformer of ``config`` on the current default device."""
    from open_clip.model import _build_vision_tower  # open_clip <4: the same builder CLIP uses

    return _build_vision_tower(config["embed_dim"], config["vision_cfg"],
                               quick_gelu=bool(config.get("quick_gelu", False)), cast_dtype=None)


def _new_clip(config: dict) -> nn.Module:
    from open_clip.model import CLIP

    return CLIP(embed_dim=config["embed_dim"], vision_cfg=config["vision_cfg"], text_cfg=config.get("text_cfg") or {},
                quick_gelu=bool(config.get("quick_gelu", False)))


def _info(config: dict, sha256: str, weights_path: str | None = None) -> BaseInfo:
    vision = config["vision_cfg"]
    return BaseInfo(config_name=config_name(config), sha256=sha256, embed_dim=int(config["embed_dim"]),
                    width=int(vision["width"]), layers=int(vision["layers"]),
                    architecture=architecture(config), weights_path=weights_path)


def _finish(visual: nn.Module, device, dtype: torch.dtype) -> nn.Module:
    visual.requires_grad_(False)
    visual.eval()
    return visual.to(device=torch.device(device), dtype=dtype)


def random_base(config: str | Path | dict, seed: int = 0, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[nn.Module, BaseInfo]:
    """A vision tower with open_clip's own random initialisation, reproducible from ``seed``.

    Returns the frozen tower in eval mode and its :class:`BaseInfo` (sha256 ``"random:<seed>"``).
    It equals the ``visual`` part of :func:`random_clip_state_dict` for the same seed.
    """
    config = load_base_config(config)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        visual = _new_visual(config)
    return _finish(visual, device, dtype), _info(config, f"{RANDOM_PREFIX}{seed}")


def random_clip_state_dict(config: str | Path | dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """The full CLIP state dict (vision + text + logit_scale) of a random model, in the layout of
    the published FetalCLIP checkpoint. Its ``visual.*`` part equals :func:`random_base`."""
    config = load_base_config(config)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        clip = _new_clip(config)
    return {k: v.detach() for k, v in clip.state_dict().items()}


@lru_cache(maxsize=8)
def _expected_shapes(arch_json: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the full CLIP state dict of a config (built on the meta device: instant)."""
    config = json.loads(arch_json)
    with torch.device("meta"):
        clip = _new_clip(config)
    return {k: tuple(v.shape) for k, v in clip.state_dict().items()}


def build_vision_tower(config: str | Path | dict, weights: str | Path | None = None,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       seed: int = 0) -> tuple[nn.Module, BaseInfo]:
    """The frozen vision tower of ``config`` with the weights of a FetalCLIP checkpoint file.

    Args:
        config: config name, JSON path or dict (see :func:`load_base_config`).
        weights: ``FetalCLIP_weights.pt`` (or ``.safetensors``); ``None`` gives :func:`random_base`.
        device, dtype: where the tower lives (bf16 on CUDA, fp32 on CPU: see ``device.py``).
        seed: random initialisation seed when ``weights`` is ``None``.

    The tower maps ``(B, 3, 224, 224)`` -> ``(B, embed_dim)`` and is in eval mode, frozen.
    Raises :class:`FetalIQAError` when the file is not a tensors-only checkpoint of this config.
    """
    config = load_base_config(config)
    if weights is None:
        return random_base(config, seed=seed, device=device, dtype=dtype)
    path = Path(weights).expanduser()
    state = load_clip_state_dict(path)
    visual_state = _check_state_dict(state, config, path)
    from fetaliqa_core import validate

    validate.check_weight_dtypes(visual_state, f"base weights file {path}", "the vision tower")
    validate.check_finite(visual_state, f"base weights file {path}", "the vision tower")
    visual_state = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
                    for k, v in visual_state.items()}
    with torch.device("meta"):
        visual = _new_visual(config)
    visual.load_state_dict(visual_state, strict=True, assign=True)
    del state
    return _finish(visual, device, dtype), _info(config, file_sha256(path), str(path))


# ----------------------------------------------------------------------------------- checkpoint files
def load_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint that holds tensors only (``torch.load(weights_only=True)`` or safetensors).

    Accepts a plain state dict, one wrapped under ``"state_dict"`` (or ``"model"``), and keys
    prefixed ``"module."``. Never runs code from the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FetalIQAError(f"base weights file {path} does not exist; give the path of FetalCLIP_weights.pt")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from fetaliqa_core import validate

        validate.check_safetensors(path, "the base weights file")
        try:
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise FetalIQAError(f"base weights file {path} is not a readable safetensors file ({exc}); "
                                "it may be truncated: download it again") from exc
    else:
        obj = _torch_load(path)
    return _unwrap_state_dict(obj, path)


def _torch_load(path: Path) -> Any:
    bad = f"base weights file {path}"
    if path.stat().st_size == 0:
        raise FetalIQAError(f"{bad} is empty; download FetalCLIP_weights.pt again")
    from fetaliqa_core import validate

    validate.check_torch_checkpoint(path, "the base weights file",
                                    "Give FetalCLIP_weights.pt as published (download it again if it was cut "
                                    "short), or convert the weights to .safetensors.")
    try:
        # mmap: only the pages of the tensors we keep (the vision tower) are read from disk
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol notes meant for developers
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights only" in str(exc).lower() or "unsupported global" in str(exc).lower():
            raise FetalIQAError(
                f"{bad} contains Python objects besides tensors, which FetalIQA refuses to load because "
                "unpickling them could run code; give the plain FetalCLIP_weights.pt state dict "
                "(or convert it to .safetensors)") from exc
        raise FetalIQAError(f"{bad} is not a PyTorch checkpoint ({first}); give FetalCLIP_weights.pt") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to parse a user's file is that file's fault
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "it looks truncated or damaged: download it again"
        raise FetalIQAError(f"{bad} cannot be read ({detail}); {hint}") from exc


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj:
        raise FetalIQAError(f"base weights file {path} does not hold a state dict (found {type(obj).__name__}); "
                            "give FetalCLIP_weights.pt")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise FetalIQAError(f"base weights file {path}: entry {key!r} is not a tensor; "
                                "give the plain FetalCLIP state dict")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def _describe_file_architecture(state: dict[str, torch.Tensor]) -> dict | None:
    """Best guess of the ViT a state dict holds (width, layers, patch, embed_dim)."""
    conv = state.get("visual.conv1.weight")
    proj = state.get("visual.proj")
    if conv is None or conv.ndim != 4:
        return None
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("visual.transformer.resblocks.")
              and k.split(".")[3].isdigit()}
    return {"width": int(conv.shape[0]), "patch_size": int(conv.shape[-1]),
            "layers": (max(blocks) + 1) if blocks else 0,
            "embed_dim": int(proj.shape[1]) if proj is not None and proj.ndim == 2 else None}


#: Base weights files up to this size are looked into for their architecture when no config is
#: named (the tiny family's are megabytes; FetalCLIP's ViT-L/14, ~1.7 GB, is the default anyway).
CONFIG_SNIFF_BYTES = 200 * 2**20


def config_of_weights(path: str | Path) -> str | None:
    """The name of the bundled config whose architecture a (small) base weights file holds, or None
    (another, or several, or a file too large to read twice: the default config stands)."""
    path = Path(path)
    try:
        if path.stat().st_size > CONFIG_SNIFF_BYTES:
            return None
        found = _describe_file_architecture(load_clip_state_dict(path))
    except (OSError, FetalIQAError):
        return None  # the loading proper says what is wrong
    if found is None:
        return None
    names = [name for name in CONFIG_NAMES
             if (found["width"], found["layers"], found["patch_size"], found["embed_dim"]) ==
             (load_base_config(name)["vision_cfg"]["width"], load_base_config(name)["vision_cfg"]["layers"],
              load_base_config(name)["vision_cfg"]["patch_size"], load_base_config(name)["embed_dim"])]
    return names[0] if len(names) == 1 else None


def _architecture_hint(state: dict[str, torch.Tensor], config: dict) -> str:
    found = _describe_file_architecture(state)
    if found is None:
        return "the file does not hold a CLIP vision tower (no 'visual.conv1.weight'): is it FetalCLIP_weights.pt?"
    for name in CONFIG_NAMES:
        other = load_base_config(name)
        v = other["vision_cfg"]
        if (found["width"], found["layers"], found["patch_size"], found["embed_dim"]) == \
                (v["width"], v["layers"], v["patch_size"], other["embed_dim"]) and \
                architecture(other) != architecture(config):
            return f"this looks like the {name} config: pass --base-config {name}"
    v = config["vision_cfg"]
    if (found["width"], found["layers"], found["patch_size"], found["embed_dim"]) == \
            (v["width"], v["layers"], v["patch_size"], config["embed_dim"]):
        # the same architecture, a tensor of another shape: no config fits a file changed that way
        return "the file is of this architecture but a tensor in it has another shape: it is damaged; get it again"
    return (f"the file holds a ViT of width {found['width']}, {found['layers']} layers, patch {found['patch_size']}, "
            f"embedding {found['embed_dim']}; the config expects width {v['width']}, {v['layers']} layers, "
            f"patch {v['patch_size']}, embedding {config['embed_dim']}: it is another model than this config's "
            f"(FetalCLIP is a ViT-L/14: width 1024, 24 layers, patch 14); a config made for it goes to "
            "--base-config when training")


def _first(items, n: int = 5) -> str:
    items = sorted(items)
    text = ", ".join(items[:n])
    return text + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _check_state_dict(state: dict[str, torch.Tensor], config: dict, path: Path) -> dict[str, torch.Tensor]:
    """Check a full CLIP state dict against ``config``; return the vision tower's part (keys without
    the ``visual.`` prefix). Text-tower keys are checked for shape when known, then dropped."""
    expected = _expected_shapes(json.dumps(config, sort_keys=True))
    want_visual = {k for k in expected if k.startswith("visual.")}
    have_visual = {k for k in state if k.startswith("visual.")}
    missing = want_visual - have_visual
    unexpected = have_visual - want_visual
    # text-tower shapes are only known when the config describes the text tower
    checked = lambda k: k in expected and (k.startswith("visual.") or "text_cfg" in config)  # noqa: E731
    mismatched = [(k, tuple(state[k].shape), expected[k])
                  for k in sorted(state, key=lambda k: (not k.startswith("visual."), k))
                  if checked(k) and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} vision keys missing ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected vision keys ({_first(unexpected)})")
        if mismatched:
            k, got, want = mismatched[0]
            extra = f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""
            parts.append(f"shape mismatch at {k}: file has {list(got)}, config expects {list(want)}{extra}")
        raise FetalIQAError(f"base weights file {path} does not match the base config: {'; '.join(parts)}; "
                            f"{_architecture_hint(state, config)}")
    return {k[len("visual."):]: state[k] for k in want_visual}


def save_base_weights(clip_state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a CLIP state dict in FetalCLIP's format: tensors only, ``torch.save`` (``.pt``) or
    safetensors (``.safetensors``)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in clip_state_dict.items()}
    from fetaliqa_core.files import atomic_path, atomic_torch_save, safetensors_save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all, a full disk said in one line (torch.save raised two RuntimeErrors)
    if path.suffix.lower() == ".safetensors":
        with atomic_path(path) as tmp:
            safetensors_save_file(state, tmp)
    else:
        atomic_torch_save(state, path)
    return path


# ----------------------------------------------------------------------------------- hashing
_HASH_CACHE_FILE = "base_sha256.json"
_ALWAYS_HASH_BELOW = 64 << 20


#: The hash cache holds one short entry per base file hashed: far below this.
_HASH_CACHE_LIMIT = 4 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file; remembered in the cache dir because a FetalCLIP checkpoint is 1.7 GB and
    hashing it takes seconds.

    The remembered hash is used only while the file's size, mtime, *ctime*, inode and device are
    all unchanged: a file swapped in with its mtime restored (``touch -d``) or renamed over the
    original has a new ctime or inode, and is hashed again. ctime cannot be set by a user. Files
    under 64 MB are always hashed (a fraction of a second)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
    cache_path = paths.cache_dir() / _HASH_CACHE_FILE
    try:
        # bounded, and a regular file only (a pipe there hung, a 1.5 GB file was read whole)
        from fetaliqa_core.validate import read_json_bounded

        cache = (read_json_bounded(cache_path, "the hash cache", "", max_bytes=_HASH_CACHE_LIMIT)
                 if stat.st_size >= _ALWAYS_HASH_BELOW and cache_path.exists() else {})
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError, RecursionError, FetalIQAError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str) \
            and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            digest.update(chunk)
    value = digest.hexdigest()
    cache[key] = {"stamp": stamp, "sha256": value}
    try:
        write_json(cache_path, cache, indent=None)
    except OSError:
        pass  # a cache that cannot be written only costs time
    return value


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Fingerprint of tensors (names, dtypes, shapes, bytes), independent of the file they came from."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
