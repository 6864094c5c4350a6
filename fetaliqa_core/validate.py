"""The limits every file FetalIQA reads is held to, checked before anything is allocated or built.

Each reader asks here first, with what the file's *header* claims: sweep volumes (frames, frame
size, bytes against the memory the machine has), model manifests and base configs (every number
in a sane range, parameter count), safetensors headers (header length, claimed sizes against the
file), cached results (``.npy`` headers inside an ``.npz``), JSON files (size and nesting). A
violation raises :class:`~fetaliqa_core.errors.FetalIQAError` whose message is one line: the
file, what is wrong, what to do.

All size arithmetic uses Python integers, so a header claiming ``DimSize 1e20`` or a product
beyond int64 is reported, never overflowed.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterable

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import plain_text

# --- sweeps --------------------------------------------------------------------------------------
#: An ACOUSLIC case has 840 frames; a 5-minute cine at 60 frames/s has 18 000.
MAX_FRAMES = 20_000
#: Ultrasound frames are at most a screen's size; 4096 leaves room for any export.
MAX_FRAME_SIDE = 4096
#: Width/height (or height/width) beyond this is a strip, not an ultrasound frame.
MAX_FRAME_ASPECT = 10
#: A volume may take at most this share of the machine's memory.
MEMORY_SHARE = 0.8
#: Memory a read takes beside a volume's pixels (buffers, decoders), kept free when a sweep is
#: bounded by what is available now (:func:`check_memory`).
MEMORY_MARGIN = 256 << 20
#: A DICOM series folder of more files than this is not one sweep.
MAX_SERIES_FILES = MAX_FRAMES

# --- models ----------------------------------------------------------------------------------------
MAX_SEED = 2**32 - 1
INIT_FILTERS_RANGE = (1, 256)
LORA_R_RANGE = (1, 256)
LORA_ALPHA_MAX = 4096.0
EMBED_DIM_RANGE = (1, 8192)
WIDTH_RANGE = (8, 8192)
LAYERS_RANGE = (1, 96)
MLP_RATIO_RANGE = (0.25, 16.0)
#: FetalCLIP (ViT-L/14) has about 0.3 G vision parameters; ten times that is not a FetalCLIP tower.
MAX_VISION_PARAMS = 3_000_000_000
MAX_MANIFEST_BYTES = 4 << 20
MAX_JSON_DEPTH = 32
#: A safetensors header lists its tensors (~100 bytes each): FetalCLIP's whole model needs < 100 KB.
#: Parsing one is a single call that holds the interpreter, so a huge one would stall the viewer.
MAX_SAFETENSORS_HEADER = 8 << 20
SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                        "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}

# --- cache -------------------------------------------------------------------------------------------
MAX_CACHE_FILE_BYTES = 1 << 30
MAX_NPZ_MEMBERS = 32



def shown_value(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (a manifest's value of 200,000
    characters was echoed whole into a one-line error and a dialog)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

def _size_text(n: int) -> str:
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def machine_memory_bytes() -> int | None:
    """The memory this machine gives a process: physical memory, or a container's limit when
    lower; None if unknown. A volume may take at most :data:`MEMORY_SHARE` of it, however idle the
    machine (:func:`available_memory_bytes` bounds a sweep by what is free now as well)."""
    total = None
    try:
        total = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file, encoding="ascii") as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def available_memory_bytes() -> int | None:
    """The memory a process can take now without the system running out: Linux's MemAvailable
    (free memory plus the caches it can drop), less within a container's limit or what is left of
    the process's address-space limit; elsewhere the free pages; None if unknown. A sweep's pixels beyond it are not read: a 3.8 MB compressed file
    whose honest header describes 4096 x 4096 x 232 pixels (3.9 GB) was decoded until the system
    killed the process, with no word and, in an archive run, no result for the other cases."""
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            return None
    try:  # a container (cgroup v2): its limit less what it uses, less the page cache it can drop
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = fh.read().strip()
        if limit.isdigit() and used.isdigit():
            free = min(free, max(int(limit) - max(int(used) - _cgroup_reclaimable(), 0), 0))
    except OSError:
        pass
    left = address_space_left()
    if left is not None:
        free = left if free is None else min(free, left)
    return free


def memory_bound() -> tuple[int | None, bool]:
    """:func:`available_memory_bytes` and whether the process's own address-space limit is what
    bounds it. The limit is read first: the process only grows meanwhile, so what is left of it
    shrinks by as much between the two readings (compared exactly, a growing process's limit was
    told as the machine's, once in 200 calls, advising to close other programs)."""
    left = address_space_left()
    free = available_memory_bytes()
    return free, left is not None and free is not None and free >= left - _BOUND_SLACK


#: What a process may grow by between the two readings of :func:`memory_bound`.
_BOUND_SLACK = 64 << 20


def address_space_limit() -> int | None:
    """A limit on this process's address space (ulimit -v), in bytes; None without one, or where
    there is no such limit to read (POSIX's resource module is not on every system)."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if limit == resource.RLIM_INFINITY else limit


def address_space_left() -> int | None:
    """What is left of a limit on this process's address space (ulimit -v), in bytes; None
    without one (or where it cannot be read)."""
    limit = address_space_limit()
    if limit is None:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
        return max(limit - size, 0)
    except (OSError, ValueError, StopIteration):
        return None


def _cgroup_reclaimable() -> int:
    """The page cache a container's memory count holds that the kernel drops when memory is
    needed (cgroup v2 memory.stat ``inactive_file``, as container tools leave it out of their
    "working set"): counted as used, it refused a 750 KB sweep in a container whose cache had
    filled up to its limit after reading earlier cases. 0 when it cannot be read."""
    try:
        with open("/sys/fs/cgroup/memory.stat", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "inactive_file" and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return 0


_SWEEP_TODO = "the file's header is wrong, or the recording must be split into shorter sweeps to be opened here."
_SWEEP_TODO_NOW = ("close other programs and try again, or export the sweep with fewer frames (shorter parts) "
                   "or smaller frames.")


def check_memory(source: str, needed: int, what: str, todo: str = _SWEEP_TODO, now: bool = False) -> None:
    """Refuse to allocate ``needed`` bytes when the machine does not have them; ``now``: nor when
    they (and :data:`MEMORY_MARGIN`) are more than it has available at this moment
    (:func:`available_memory_bytes`)."""
    available = machine_memory_bytes()
    if available is not None and needed > MEMORY_SHARE * available:
        raise FetalIQAError(f"{source}: {what} needs {_size_text(needed)} of memory, but this machine has "
                            f"{_size_text(available)}: {todo}")
    free, by_limit = memory_bound() if now else (None, False)
    if free is not None and needed + MEMORY_MARGIN > free and by_limit:
        # the process's own limit, not the machine, is short: closing programs would not help
        raise FetalIQAError(f"{source}: {what} needs {_size_text(needed)} of memory ({_size_text(needed + MEMORY_MARGIN)} "
                            f"with what reading takes), but this process's address-space limit (ulimit -v) leaves "
                            f"only {_size_text(free)} of it: raise the limit, or remove it, and try again.")
    if free is not None and needed + MEMORY_MARGIN > free:
        raise FetalIQAError(f"{source}: {what} needs {_size_text(needed)} of memory ({_size_text(needed + MEMORY_MARGIN)} "
                            f"with what reading takes), but this machine has only {_size_text(free)} available now: {_SWEEP_TODO_NOW if todo == _SWEEP_TODO else todo}")


def check_path_name(path: Path) -> None:
    """A name the image libraries can open: file names that are not valid UTF-8 abort them."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = plain_text(text).encode("ascii", "backslashreplace").decode("ascii")
        _refuse_utf8_read_as_ascii(text, shown)
        raise FetalIQAError(f"{shown}: the file name is not valid UTF-8 text (made by another system's "
                            "encoding), so it cannot be opened safely. Rename the file or its folder.") from None
    if "\0" in text:
        raise FetalIQAError(f"{text!r}: the file name contains a NUL character. Rename the file.")
    if "\ufffd" in text and not os.path.lexists(text):
        # A file dialog hands on a name it could not decode with U+FFFD in place of the bytes.
        raise FetalIQAError(f"{text}: the file name holds bytes that are not valid UTF-8 text (shown as \ufffd), "
                            "so it cannot be opened by this name. Rename the file or its folder.")


def _refuse_utf8_read_as_ascii(text: str, shown: str) -> None:
    """A name that is UTF-8 on disk but was read in a process whose file names are not UTF-8 (a
    C locale with Python's UTF-8 mode off): the setting is at fault, not the name, which was
    blamed as "not valid UTF-8 text" and to be renamed."""
    import sys

    encoding = sys.getfilesystemencoding()
    if encoding.lower().replace("-", "") in ("utf8", "utf8mb4"):
        return
    try:
        text.encode(encoding, "surrogateescape").decode("utf-8")
    except (UnicodeError, LookupError):
        return
    raise FetalIQAError(f"{shown}: the file name is UTF-8 text, but this process reads file names as {encoding} "
                        "(a C locale with Python's UTF-8 mode off), so it cannot be opened safely. Run with "
                        "PYTHONUTF8=1, or with a UTF-8 locale (LC_ALL=C.UTF-8).")


def check_volume(source: str | Path, frames: int, height: int, width: int, bytes_per_pixel: int,
                 extra_bytes_per_pixel: int = 0) -> None:
    """Bound a sweep's claimed size before any pixel is read.

    ``bytes_per_pixel``: what decoding the file allocates per pixel (0 when memory-mapped);
    ``extra_bytes_per_pixel``: what conversion to 8-bit frames adds.
    """
    if min(frames, height, width) < 0:
        raise FetalIQAError(f"{source}: the header gives a negative size. The file is damaged; export it again.")
    if frames > MAX_FRAMES:
        raise FetalIQAError(
            f"{source}: the header claims {frames} frames; at most {MAX_FRAMES} are accepted (an ACOUSLIC "
            "case has 840). The header is wrong or the recording is not one sweep; export the sweep again.")
    if max(height, width) > MAX_FRAME_SIDE:
        raise FetalIQAError(
            f"{source}: frames of {height} x {width} pixels (height x width) claimed; at most "
            f"{MAX_FRAME_SIDE} per side are accepted. Check that the file holds ultrasound frames, or "
            "export them at screen resolution.")
    if min(height, width) > 0 and max(height, width) > MAX_FRAME_ASPECT * min(height, width):
        raise FetalIQAError(
            f"{source}: frames of {height} x {width} pixels (height x width) are a strip, not an "
            "ultrasound frame. Check that the file holds ultrasound frames (frames x height x width).")
    pixels = frames * height * width
    needed = pixels * (bytes_per_pixel + extra_bytes_per_pixel)
    if needed:
        check_memory(str(source), needed, f"a sweep of {frames} x {height} x {width} pixels", now=True)


def checked_product(values: Iterable[int]) -> int:
    """Product of header sizes as a Python int (never overflows)."""
    return math.prod(int(v) for v in values)


def check_inflation(source: str | Path, claimed_bytes: int, compressed_bytes: int, ratio: int = 1100) -> None:
    """Deflate cannot expand data more than about 1032:1; a header claiming more is lying."""
    if claimed_bytes > ratio * max(compressed_bytes, 1):
        raise FetalIQAError(
            f"{source}: the header claims {_size_text(claimed_bytes)} of pixel data, far more than "
            f"{_size_text(compressed_bytes)} of compressed data can hold: the header is wrong or the "
            "file is damaged. Export the file again.")


def check_regular_file(path: Path, what: str) -> None:
    """Refuse named pipes, devices and sockets (reading them may block forever)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise FetalIQAError(f"{path}: {what} cannot be opened ({exc.strerror}). Keep the files of the "
                            "image together.") from None
    if stat.S_ISDIR(mode):  # (it was called "a pipe, device or socket")
        raise FetalIQAError(f"{path}: {what} is a folder, not a file: choose (or name, in a header that names "
                            "it) the file itself.")
    if not stat.S_ISREG(mode):
        raise FetalIQAError(f"{path}: {what} is not a regular file (a pipe, device or socket). Choose "
                            "an image file saved on disk.")


# --- JSON ---------------------------------------------------------------------------------------------


def json_depth_ok(value: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


class _DuplicateKey(ValueError):
    """A JSON object names one key twice (the key is the message)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_json_bounded(text: str | bytes, source: str, what: str, todo: str,
                       max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that reports deep nesting, bad text, bad UTF-8 and a key given twice in one
    object (JSON readers differ on which one counts) as one line."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise FetalIQAError(f"{source}: {what} gives {str(exc)[:60]!r} twice in one object (readers differ on "
                            f"which counts): it was edited by hand or is damaged. {todo}") from None
    except RecursionError:
        raise FetalIQAError(f"{source}: {what} is nested too deeply to be genuine. {todo}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise FetalIQAError(f"{source}: {what} is not valid JSON ({reason}). {todo}") from None
    if not json_depth_ok(value, max_depth):
        raise FetalIQAError(f"{source}: {what} is nested more than {max_depth} levels deep, so it was not "
                            f"written by FetalIQA. {todo}")
    return value


def read_json_bounded(path: Path, what: str, todo: str, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Read a small JSON file: size bounded before reading, nesting bounded after parsing."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FetalIQAError(f"{path}: {what} is {_size_text(size)}, more than the {_size_text(max_bytes)} "
                                f"such a file can be. {todo}")
        check_regular_file(path, what)
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise FetalIQAError(f"{path}: {what} cannot be read ({exc.strerror}). {todo}") from None
    return parse_json_bounded(data, str(path), what, todo)


# --- numbers in manifests and configs ----------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def int_in_range(value: Any, bounds: tuple[int, int]) -> bool:
    return is_int(value) and bounds[0] <= value <= bounds[1]


_SEED = re.compile(r"[0-9]{1,10}")


def parse_seed(text: str) -> int | None:
    """The seed of ``random:<seed>``: ASCII digits, at most :data:`MAX_SEED`; None otherwise."""
    if not isinstance(text, str) or not _SEED.fullmatch(text):
        return None
    seed = int(text)
    return seed if seed <= MAX_SEED else None


#: The settings of a FetalCLIP-family vision tower (open_clip's ViT) a config may give; every other
#: open_clip setting stays at its default (FetalCLIP's own config gives the first four only).
_VISION_KEYS = ("image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio")


def vision_config_problem(config: dict) -> str | None:
    """What is out of range in a FetalCLIP-style config (``embed_dim`` + ``vision_cfg``), or None.

    Checked before any tower is built, so a config claiming a huge tower is refused without
    allocating it."""
    from fetaliqa_core.preprocess import MODEL_INPUT_SIZE

    embed = config.get("embed_dim")
    vision = config.get("vision_cfg")
    if not int_in_range(embed, EMBED_DIM_RANGE):
        return f"embed_dim {shown_value(embed)} is not an integer in {EMBED_DIM_RANGE[0]}-{EMBED_DIM_RANGE[1]}"
    if not isinstance(vision, dict):
        return "vision_cfg is not an object"
    unknown = sorted(str(k) for k in vision if k not in _VISION_KEYS and not (k == "timm_model_name" and not vision[k]))
    if unknown:
        return (f"vision_cfg.{unknown[0][:40]} is not a setting of a FetalCLIP-family ViT "
                f"(those are {', '.join(_VISION_KEYS)})")
    if "quick_gelu" in config and not isinstance(config["quick_gelu"], bool):
        return f"quick_gelu {shown_value(config['quick_gelu'])} is not true or false"
    width, layers = vision.get("width"), vision.get("layers")
    patch, image = vision.get("patch_size"), vision.get("image_size")
    if not int_in_range(width, WIDTH_RANGE):
        return f"vision_cfg.width {shown_value(width)} is not an integer in {WIDTH_RANGE[0]}-{WIDTH_RANGE[1]}"
    if not int_in_range(layers, LAYERS_RANGE):
        return f"vision_cfg.layers {shown_value(layers)} is not an integer in {LAYERS_RANGE[0]}-{LAYERS_RANGE[1]}"
    if image != MODEL_INPUT_SIZE:
        return f"vision_cfg.image_size {shown_value(image)} is not {MODEL_INPUT_SIZE}, the size frames are given to the model"
    if not is_int(patch) or not 1 <= patch <= image // 2:
        return (f"vision_cfg.patch_size {shown_value(patch)} does not fit the {image}-pixel image (at most {image // 2}, "
                "so that the image holds at least 2 x 2 patches)")
    head_width = vision.get("head_width", 64)
    if not is_int(head_width) or not 1 <= head_width <= width or width % head_width:
        return f"vision_cfg.head_width {shown_value(head_width)} does not divide the width {width}"
    mlp_ratio = vision.get("mlp_ratio", 4.0)
    if not is_number(mlp_ratio) or not MLP_RATIO_RANGE[0] <= mlp_ratio <= MLP_RATIO_RANGE[1]:
        return f"vision_cfg.mlp_ratio {shown_value(mlp_ratio)} is not a number in {MLP_RATIO_RANGE[0]}-{MLP_RATIO_RANGE[1]}"
    tokens = (image // patch) ** 2 + 1
    params = (layers * (4 + 2 * mlp_ratio) * width * width + 3 * patch * patch * width
              + tokens * width + width * embed)
    if params > MAX_VISION_PARAMS:
        return (f"the vision tower would have {params / 1e9:.1f} G parameters, more than the "
                f"{MAX_VISION_PARAMS / 1e9:.0f} G any FetalCLIP-family tower has")
    return None


def check_vision_memory(config: dict, source: str) -> None:
    vision = config["vision_cfg"]
    width, layers = vision["width"], vision["layers"]
    params = layers * (4 + 2 * vision.get("mlp_ratio", 4.0)) * width * width
    check_memory(source, int(params * 4), "building this vision tower",
                 "use a FetalCLIP-family config (fetalclip or tiny), or a machine with more memory.")


def lora_problem(data: dict) -> str | None:
    r, alpha, dropout = data.get("r", 8), data.get("alpha", 16), data.get("dropout", 0.1)
    if not int_in_range(r, LORA_R_RANGE):
        return f"LoRA r {shown_value(r)} is not an integer in {LORA_R_RANGE[0]}-{LORA_R_RANGE[1]}"
    if not is_number(alpha) or not 0 < alpha <= LORA_ALPHA_MAX:
        return f"LoRA alpha {shown_value(alpha)} is not a number in (0, {LORA_ALPHA_MAX:g}]"
    if not is_number(dropout) or not 0 <= dropout < 1:
        return f"LoRA dropout {shown_value(dropout)} is not a number in [0, 1)"
    return None


def bundle_file_problem(name: Any, allowed: Iterable[str]) -> str | None:
    """A manifest's file entry must be one of the bundle's own file names (no folder, no path)."""
    allowed = tuple(allowed)
    if not isinstance(name, str) or name not in allowed:
        shown = repr(name)[:80]
        if isinstance(name, str) and ("/" in name or "\\" in name or name.startswith("..") or os.path.isabs(name)):
            return (f"the manifest names the file {shown}, a path outside the bundle folder (refused: a bundle "
                    f"holds only {', '.join(allowed)} beside manifest.json); export the bundle again with "
                    "FetalIQA, or ask its author for an unmodified copy")
        return (f"the manifest names an unknown file {shown} (a bundle holds only {', '.join(allowed)}); "
                "export the bundle again with FetalIQA")
    return None


# --- safetensors ----------------------------------------------------------------------------------------------


def check_safetensors(path: Path, what: str) -> dict[str, dict]:
    """Check a safetensors file's header against the file before any tensor is read; return its
    tensors' descriptions (``{name: {dtype, shape, data_offsets}}``, checked).

    Layout: 8-byte little-endian header length N, N bytes of JSON ``{name: {dtype, shape,
    data_offsets}}``, then the data. Every claimed size must fit in the file."""
    todo = "The file is damaged or was not written by FetalIQA; copy or export it again."
    try:
        size = path.stat().st_size
        check_regular_file(path, what)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise FetalIQAError(f"{path}: {what} is {size} bytes, too short for a safetensors file. {todo}")
            (n,) = struct.unpack("<Q", head)
            if MAX_SAFETENSORS_HEADER < n <= size - 8:
                raise FetalIQAError(f"{path}: {what}'s header takes {_size_text(n)}, far more than a model's list of "
                                    f"tensors needs (at most {_size_text(MAX_SAFETENSORS_HEADER)}). {todo}")
            if n > min(size - 8, MAX_SAFETENSORS_HEADER):
                raise FetalIQAError(f"{path}: {what}'s header claims {_size_text(n)} but the file holds "
                                    f"{_size_text(size)}. {todo}")
            header = fh.read(n)
    except OSError as exc:
        raise FetalIQAError(f"{path}: {what} cannot be read ({exc.strerror}). {todo}") from None
    info = parse_json_bounded(header, str(path), f"{what}'s header", todo, max_depth=4)
    if not isinstance(info, dict):
        raise FetalIQAError(f"{path}: {what}'s header is not a JSON object. {todo}")
    data_bytes = size - 8 - n
    for name, entry in info.items():
        if name == "__metadata__":
            continue
        problem = _tensor_entry_problem(entry, data_bytes)
        if problem:
            raise FetalIQAError(f"{path}: {what}: tensor {str(name)[:60]!r} {problem}. {todo}")
    return {name: entry for name, entry in info.items() if name != "__metadata__"}


def _tensor_entry_problem(entry: Any, data_bytes: int) -> str | None:
    if not isinstance(entry, dict):
        return "has no description"
    itemsize = SAFETENSORS_ITEMSIZE.get(entry.get("dtype"))
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if itemsize is None:
        return f"has an unknown dtype {str(entry.get('dtype'))[:20]!r}"
    if not isinstance(shape, list) or len(shape) > 8 or not all(is_int(d) and d >= 0 for d in shape):
        return "has an invalid shape"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes):
        return f"claims data beyond the file's {data_bytes} data bytes"
    elements = checked_product(shape)
    claimed = elements * itemsize
    if claimed > data_bytes:  # (said in bytes, a lying shape was "77371252455336267181195264.0 TB")
        count = f"{elements:,}" if elements < 10**15 else f"about 10^{len(str(elements)) - 1}"
        return (f"has a shape of {count} elements, far more than the whole file holds "
                f"({_size_text(data_bytes)} of data)")
    if claimed != offsets[1] - offsets[0]:
        return f"claims {_size_text(claimed)} for its shape but {offsets[1] - offsets[0]} bytes of data"
    return None


def check_weight_dtypes(tensors: dict, source: str, what: str = "the file") -> None:
    """Every tensor holds its values (not a meta or sparse placeholder) as 16-, 32- or 64-bit
    floats: what a vision tower's weights are. Integer, boolean, complex and 8-bit float tensors
    failed deep in PyTorch with a traceback, or loaded as nonsense."""
    import torch

    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            continue
        if t.is_meta or t.layout != torch.strided:
            kind = "as a meta tensor, without its values" if t.is_meta else f"in a {t.layout} layout, not as a dense array"
            raise FetalIQAError(f"{source}: {what} holds tensor {str(name)[:80]} {kind.replace('torch.', '')}: "
                                "it is no model's weights as FetalIQA reads them. Export the weights again.")
        if t.dtype not in floats:
            raise FetalIQAError(f"{source}: {what} holds tensor {str(name)[:80]} as {str(t.dtype).replace('torch.', '')}, "
                                "not as 16-, 32- or 64-bit floating-point weights. Export the weights again "
                                "(float32 or bfloat16).")


def check_finite(tensors: dict, source: str, what: str = "the file") -> None:
    """Every floating-point tensor holds finite values only (NaN weights score nonsense); 8-bit
    float and meta tensors, which cannot be checked, are refused."""
    import torch

    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and (t.is_meta or (t.is_floating_point() and t.element_size() == 1)):
            raise FetalIQAError(f"{source}: {what} holds tensor {str(name)[:80]} as "
                                f"{'a meta tensor without values' if t.is_meta else str(t.dtype).replace('torch.', '')}, "
                                "which FetalIQA does not load. Export the weights as float32 or bfloat16.")
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise FetalIQAError(f"{source}: {what} holds NaN or infinite values (tensor {name}), so its scores "
                                "would be meaningless. The model is damaged; export or train it again.")


# --- PyTorch checkpoints (.pt) -----------------------------------------------------------------------------
#: The pickle of a state dict names its tensors and storages; FetalCLIP's is about 100 KB, a
#: training checkpoint's (adapters, optimiser state, history) well under 1 MB.
MAX_TORCH_PICKLE = 8 << 20
#: Opcodes in that pickle: FetalCLIP's has ~15 a tensor (~10,000); each may build an object.
MAX_PICKLE_OPS = 1_000_000
#: Elements of one storage: 2**40 is 4 TB of float32, far beyond any file this reads.
MAX_STORAGE_ELEMENTS = 2**40
MAX_TORCH_RECORDS = 100_000
#: Bytes per element of each storage class ``torch.save`` names in its pickle.
TORCH_STORAGE_ITEMSIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
    "UntypedStorage": 1,  # dtypes without a class of their own (uint16-64, float8, ...): counted in bytes
}
_ZIP_LOCAL_HEADER = struct.Struct("<4s5H3I2H")


class _Opaque:
    """Stands for anything a checkpoint's pickle builds: calling it, indexing it or setting its
    state gives another placeholder. No code from the file or from any module runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Opaque":
        return _Opaque()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


def _walk_pickle(pickled: bytes) -> None:
    """Read a pickle's opcodes without building anything, and refuse one that would make an
    unpickler allocate far beyond its size: more than :data:`MAX_PICKLE_OPS` opcodes (each may
    build an object), or a memo index beyond the opcode count (the memo is sized by the index:
    nine bytes could claim gigabytes)."""
    import pickle
    import pickletools

    memo_ops = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}
    for n, (op, arg, _pos) in enumerate(pickletools.genops(pickled)):
        if n >= MAX_PICKLE_OPS:
            raise pickle.UnpicklingError(f"more than {MAX_PICKLE_OPS} operations")
        if op.name in memo_ops and (not isinstance(arg, int) or arg < 0 or arg > MAX_PICKLE_OPS):
            raise pickle.UnpicklingError("a memo index out of range")


def _storage_claims(pickled: bytes) -> list[tuple[str, str, int]]:
    """(record key, storage class name, element count) of every storage a checkpoint's pickle
    refers to, read with an unpickler whose every global is a placeholder (after
    :func:`_walk_pickle` has bounded what it may build)."""
    import io
    import pickle

    _walk_pickle(pickled)
    claims: list[tuple[str, str, int]] = []

    class _Storage:
        __slots__ = ("name",)

        def __init__(self, name: str) -> None:
            self.name = name

        def __setstate__(self, state: Any) -> None:  # the file cannot rename it
            pass

    class _Reader(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module in ("torch", "torch.storage") and name.endswith("Storage"):
                return _Storage(name)
            return _Opaque

        def persistent_load(self, pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise pickle.UnpicklingError("unknown persistent id")
            _, kind, key, _location, numel = pid
            if (not isinstance(kind, _Storage) or not isinstance(kind.name, str) or not isinstance(key, str)
                    or not is_int(numel) or not 0 <= numel <= MAX_STORAGE_ELEMENTS):
                raise pickle.UnpicklingError("malformed storage reference")
            if len(claims) >= MAX_TORCH_RECORDS:
                raise pickle.UnpicklingError("too many storages")
            claims.append((key, kind.name, int(numel)))
            return _Opaque()

    _Reader(io.BytesIO(pickled)).load()
    return claims


def check_torch_checkpoint(path: Path, what: str, todo: str) -> None:
    """Check a ``torch.save`` file against itself before ``torch.load`` reads it.

    ``torch.load`` trusts the sizes in the file: a pickle record claiming gigabytes is read into
    memory, and a storage larger than its record is mapped over the records after it. Here the
    zip's directory, each record's place in the file and every storage the pickle refers to
    (element count x element size, read without running anything from the file) are checked
    against the file's real size. The legacy (pre-1.6, not zip) format is refused: its sizes
    cannot be checked before they are allocated."""
    try:
        size = path.stat().st_size
        check_regular_file(path, what)
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as fh:
                if fh.read(4) == b"PK\x03\x04":
                    raise FetalIQAError(f"{path}: {what} is a zip archive without its directory at the end: it "
                                        f"was cut short or is damaged. {todo}")
            raise FetalIQAError(
                f"{path}: {what} is not a PyTorch checkpoint in the zip format torch.save has written since "
                "PyTorch 1.6 (older or other files are not read, as their sizes cannot be checked first). "
                f"{todo}")
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_TORCH_RECORDS:
                raise FetalIQAError(f"{path}: {what} holds {len(infos)} records, more than a checkpoint has. {todo}")
            records: dict[str, zipfile.ZipInfo] = {}
            pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(pickles) != 1:
                raise FetalIQAError(f"{path}: {what} is a zip archive but not a PyTorch checkpoint "
                                    f"({len(pickles)} data.pkl records). {todo}")
            prefix = pickles[0].filename[: -len("data.pkl")]
            for info in infos:
                problem = _zip_record_problem(fh, info, size)
                if problem:
                    raise FetalIQAError(f"{path}: {what}: record {info.filename[:80]!r} {problem}. {todo}")
                records[info.filename] = info
            pkl = pickles[0]
            if pkl.file_size > MAX_TORCH_PICKLE:
                raise FetalIQAError(f"{path}: {what}'s index (data.pkl) claims {_size_text(pkl.file_size)}, far "
                                    f"more than a state dict needs. {todo}")
            pickled = zf.read(pkl)
    except FetalIQAError:
        raise
    except OSError as exc:
        raise FetalIQAError(f"{path}: {what} cannot be read ({exc.strerror or exc}). {todo}") from None
    except Exception as exc:  # noqa: BLE001 - zip structure, CRC: the file is damaged
        raise FetalIQAError(f"{path}: {what} is a damaged zip archive ({type(exc).__name__}). {todo}") from None
    try:
        claims = _storage_claims(pickled)
    except Exception as exc:  # noqa: BLE001 - any malformed pickle: damaged or not a checkpoint
        detail = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise FetalIQAError(f"{path}: {what}'s index (data.pkl) cannot be read ({detail}). {todo}") from None
    for key, kind, numel in claims:
        itemsize = TORCH_STORAGE_ITEMSIZE.get(kind)
        if itemsize is None:
            raise FetalIQAError(f"{path}: {what} holds a storage of unknown type {kind[:40]!r}. {todo}")
        record = records.get(f"{prefix}data/{key}")
        if record is None:
            raise FetalIQAError(f"{path}: {what} refers to tensor data {key[:40]!r} that it does not hold. {todo}")
        need = numel * itemsize
        if need > record.file_size:
            raise FetalIQAError(f"{path}: {what}: tensor data {key[:40]!r} claims {_size_text(need)} but its record "
                                f"holds {_size_text(record.file_size)}. {todo}")


def _zip_record_problem(fh: Any, info: zipfile.ZipInfo, size: int) -> str | None:
    """Where a zip record's bytes lie, checked against the file (torch stores records uncompressed)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return "is compressed, which torch.save never does"
    if info.file_size != info.compress_size:
        return "has two different sizes"
    if info.header_offset < 0 or info.header_offset + _ZIP_LOCAL_HEADER.size > size:
        return "starts beyond the end of the file"
    fh.seek(info.header_offset)
    head = fh.read(_ZIP_LOCAL_HEADER.size)
    if len(head) != _ZIP_LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
        return "has no record header where the directory says"
    fields = _ZIP_LOCAL_HEADER.unpack(head)
    start = info.header_offset + _ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1]
    if start + info.file_size > size:
        return f"claims {_size_text(info.file_size)}, more than the file holds after it"
    return None


# --- cached results (.npz) ------------------------------------------------------------------------------------


def npz_headers(data: bytes) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype string of every array in an ``.npz`` held in ``data``, read from the
    ``.npy`` headers only (no array is allocated). Raises ValueError on anything malformed."""
    import io

    import numpy as np
    from numpy.lib import format as npformat

    if len(data) > MAX_CACHE_FILE_BYTES:
        raise ValueError("cache file too large")
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_NPZ_MEMBERS:
                raise ValueError("too many members")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ValueError("not an array")
                with zf.open(info) as fh:
                    version = npformat.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = npformat.read_array_header_1_0(fh)
                    elif version in ((2, 0), (3, 0)):
                        shape, fortran, dtype = npformat.read_array_header_2_0(fh)
                    else:
                        raise ValueError("unknown .npy version")
                if dtype.hasobject or fortran:
                    raise ValueError("object or Fortran array")
                nbytes = checked_product(shape) * dtype.itemsize
                if nbytes > info.file_size or info.file_size > 8 * MAX_CACHE_FILE_BYTES:
                    raise ValueError("array larger than its member")
                out[info.filename[:-4]] = (tuple(int(s) for s in shape), np.dtype(dtype).str)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - zlib, header syntax, zip structure: all mean "damaged"
        raise ValueError(f"unreadable archive ({type(exc).__name__})") from None
    return out
