"""Stream a sweep's frames through the models and collect per-frame results.

``io.load_sweep -> engine (preprocess -> models) -> analysis``: the engine decides which frames
are scored next (coarse to fine over the whole case, frames near the viewer's cursor first),
overlaps preprocessing with inference, halves the batch on a CUDA out-of-memory error, and keeps
everything it finished when cancelled. Results are cached on disk, keyed by what determines
them, so a sweep scored once reopens without running a model.

Scores per frame:

- ``p_cls``: the classifier's probability that the frame is good for measuring the AC.
- ``p_seg``: the segmenter's mask-based score ``f / (f + MASK_AREA_FRACTION)`` where ``f`` is the
  fraction of the 224x224 input covered by the predicted mask (p > 0.5). It is 0.5 exactly at
  the paper's 1 % area rule, so one threshold (0.5) gives the paper's segmenter call, and it keeps
  growing with the mask so the best frame can be ranked by it.
- ``seg_area_px``: mask pixels at model resolution; ``seg_call``: area >= 1 % (the paper's rule).
- ``p_opt``: for a 3-class segmenter, the share of the mask labelled *optimal* (else NaN).
- ``masks``: label masks at model resolution, 0 background, 1 optimal, 2 suboptimal,
  3 abdomen (binary segmenter, no plane grade).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io as _io
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetaliqa_core import paths
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_write
from fetaliqa_core.models.labels import LABEL_ABDOMEN, MASK_AREA_FRACTION  # noqa: F401
from fetaliqa_core.models.choice import check_roles

ENGINE_VERSION = "1"
COARSE_STRIDES = (16, 8, 4, 2, 1)
FOCUS_RADIUS = 12  # frames either side of the cursor scored before the coarse-to-fine order
TIMING_PARTS = ("cache_key", "wait_prepare", "infer", "results", "caller", "cache_save")
CHECKPOINT_SECONDS = 20.0  # partial results are written at most this often


@functools.cache
def code_fingerprint() -> str:
    """A digest of this program's own code: the version and every ``.py`` file of the
    ``fetaliqa_core`` package (sorted by path, each with its path), computed once per process
    (some 1.4 MB of source: tens of milliseconds, against up to seconds per frame scored).

    Part of every results-cache key: the per-frame numbers depend on the reader, preprocessing,
    models and engine code, and ``ENGINE_VERSION`` / ``PREPROCESS_VERSION`` were never bumped, so
    a cache filled by another version (one with another CPU resize) was read as this one's and
    its numbers shown as current. The whole package rather than a list of the modules the numbers
    depend on: a list would have to be kept up to date by hand, which is what failed with the
    version constants; the cost is one rescoring per sweep after any upgrade. A file that cannot
    be read counts by its name alone (an installation without sources keys on the version)."""
    from fetaliqa_core import __version__

    root = Path(__file__).resolve().parent
    h = hashlib.blake2b(f"fetaliqa {__version__}".encode(), digest_size=16)
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        h.update(b"\0" + path.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"(unreadable)")
    return h.hexdigest()


def _library_versions() -> dict:
    """The versions of the libraries that compute the numbers (convolutions, the CPU resize)."""
    import PIL
    import torch

    return {"torch": torch.__version__, "pillow": PIL.__version__, "numpy": np.__version__}


def seg_score_from_area(area_fraction: np.ndarray | float) -> np.ndarray:
    """Mask-based quality score in [0, 1): 0.5 exactly at the paper's area rule."""
    f = np.asarray(area_fraction, dtype=np.float32)
    return f / (f + np.float32(MASK_AREA_FRACTION))


def scoring_order(n_frames: int, strides: tuple[int, ...] = COARSE_STRIDES) -> np.ndarray:
    """Frame indices coarse to fine: every 16th frame, then every 8th, ... then all.

    Each index appears once; frames of a coarser pass come before those of a finer one.
    """
    seen = np.zeros(n_frames, dtype=bool)
    order: list[np.ndarray] = []
    for stride in strides:
        idx = np.arange(0, n_frames, stride)
        idx = idx[~seen[idx]]
        seen[idx] = True
        order.append(idx)
    rest = np.flatnonzero(~seen)
    order.append(rest)
    return np.concatenate(order).astype(np.int64)


@dataclass
class SweepResults:
    """Per-frame results of one sweep, filled in as batches finish.

    Arrays have one entry per frame; NaN (or -1 for areas) where a frame is not scored yet or
    the model is absent. ``masks`` holds label masks at model resolution for scored frames.
    """

    n_frames: int
    has_cls: bool
    has_seg: bool
    mask_size: int = 224
    p_cls: np.ndarray = field(init=False)
    p_seg: np.ndarray = field(init=False)
    p_opt: np.ndarray = field(init=False)
    seg_area_px: np.ndarray = field(init=False)
    done: np.ndarray = field(init=False)
    masks: dict[int, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        n = self.n_frames
        self.p_cls = np.full(n, np.nan, dtype=np.float32)
        self.p_seg = np.full(n, np.nan, dtype=np.float32)
        self.p_opt = np.full(n, np.nan, dtype=np.float32)
        self.seg_area_px = np.full(n, -1, dtype=np.int32)
        self.done = np.zeros(n, dtype=bool)
        self.masks = {}

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def seg_call(self) -> np.ndarray:
        """The paper's segmenter call per frame (False where unscored)."""
        limit = MASK_AREA_FRACTION * self.mask_size * self.mask_size
        return self.seg_area_px >= limit

    def mask(self, frame: int) -> np.ndarray | None:
        return self.masks.get(int(frame))

    def only(self, frames: np.ndarray) -> "SweepResults":
        """A copy holding only ``frames`` (a boolean mask or indices): every other frame reads as
        not scored. A cascade's answer is assessed on the frames its teacher confirmed."""
        keep = np.zeros(self.n_frames, dtype=bool)
        keep[np.asarray(frames)] = True
        keep &= self.done
        out = SweepResults(self.n_frames, self.has_cls, self.has_seg, self.mask_size)
        for name in ("p_cls", "p_seg", "p_opt", "seg_area_px"):
            getattr(out, name)[keep] = getattr(self, name)[keep]
        out.done = keep
        out.masks = {i: m for i, m in self.masks.items() if keep[i]}
        # the same mask arrays: what was judged of them holds (analysis.assessment.mask_shapes)
        out.shape_cache_owner = getattr(self, "shape_cache_owner", None) or self
        return out

    def apply(self, batch: "BatchResult") -> None:
        idx = batch.indices
        if batch.p_cls is not None:
            self.p_cls[idx] = batch.p_cls
        if batch.p_seg is not None:
            self.p_seg[idx] = batch.p_seg
            self.p_opt[idx] = batch.p_opt
            self.seg_area_px[idx] = batch.seg_area_px
            for i, m in zip(idx.tolist(), batch.masks):
                self.masks[i] = m
        self.done[idx] = True

    # -- persistence -----------------------------------------------------------------------
    def to_bytes(self, meta: dict) -> bytes:
        """Serialise to an .npz archive (masks stored sparsely: only frames with a mask)."""
        with_mask = np.array(sorted(i for i, m in self.masks.items() if m.any()), dtype=np.int64)
        stack = (np.stack([self.masks[int(i)] for i in with_mask]) if len(with_mask)
                 else np.zeros((0, self.mask_size, self.mask_size), np.uint8))
        buf = _io.BytesIO()
        np.savez_compressed(
            buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            p_cls=self.p_cls, p_seg=self.p_seg, p_opt=self.p_opt,
            seg_area_px=self.seg_area_px, done=self.done, mask_index=with_mask, masks=stack,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, expected_meta: dict) -> "SweepResults":
        """Rebuild from :meth:`to_bytes`; raises ValueError on anything inconsistent."""
        from fetaliqa_core import validate

        headers = validate.npz_headers(data)  # every .npy header, before any array is allocated
        if headers.get("meta", ((1 << 30,), ""))[0][0] > 1 << 16:
            raise ValueError("bad meta")
        with np.load(_io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta != expected_meta:
                raise ValueError("cache belongs to other inputs")
            n = int(meta["n_frames"])
            res = cls(n, bool(meta["has_cls"]), bool(meta["has_seg"]), int(meta["mask_size"]))
            m = res.mask_size
            for name, shape in (("p_cls", (n,)), ("p_seg", (n,)), ("p_opt", (n,)), ("seg_area_px", (n,)),
                                ("done", (n,)), ("mask_index", None), ("masks", None)):
                if name not in headers:
                    raise ValueError(f"missing {name}")
                got = headers[name][0]
                if shape is not None and got != shape:
                    raise ValueError(f"bad array {name}")
            if len(headers["mask_index"][0]) != 1 or headers["masks"][0] != (headers["mask_index"][0][0], m, m) \
                    or headers["mask_index"][0][0] > n:
                raise ValueError("bad masks")
            for name in ("p_cls", "p_seg", "p_opt", "seg_area_px", "done"):
                arr = z[name]
                if arr.shape != (n,) or arr.dtype != getattr(res, name).dtype:
                    raise ValueError(f"bad array {name}")
                setattr(res, name, arr.copy())
            for name in ("p_cls", "p_seg", "p_opt"):  # probabilities, NaN where not scored
                arr = getattr(res, name)
                if np.any((arr < 0) | (arr > 1)) or np.any(np.isinf(arr)):
                    raise ValueError(f"{name} outside [0, 1]")
            if np.any((res.seg_area_px < -1) | (res.seg_area_px > m * m)):
                raise ValueError("mask area outside the mask")
            index, masks = z["mask_index"], z["masks"]
            if masks.size and int(masks.max()) > LABEL_ABDOMEN:  # 0, 1/2 (3-class head), 3 (binary head)
                raise ValueError("mask labels other than 0-3")
            if masks.shape != (len(index), res.mask_size, res.mask_size) or masks.dtype != np.uint8:
                raise ValueError("bad masks")
            if len(index) and (index.min() < 0 or index.max() >= n or not res.done[index].all()):
                raise ValueError("bad mask index")
            empty = np.zeros((res.mask_size, res.mask_size), np.uint8)
            if res.has_seg:
                for i in np.flatnonzero(res.done):
                    res.masks[int(i)] = empty
                for i, m in zip(index.tolist(), masks):
                    res.masks[i] = m
        return res


@dataclass
class BatchResult:
    """What one finished batch adds (arrays of length B, in the order of ``indices``)."""

    indices: np.ndarray
    p_cls: np.ndarray | None
    p_seg: np.ndarray | None
    p_opt: np.ndarray | None
    seg_area_px: np.ndarray | None
    masks: list[np.ndarray]
    n_done: int
    n_total: int
    frames_per_second: float
    from_cache: bool = False
    #: what the frame choice judged of these frames' masks where they were scored
    #: (``analysis.assessment.shape_hints``): the window takes it instead of judging them again
    #: on its own thread (2 s for a case of 840 masked frames opened again from the cache)
    shape_hints: dict | None = None


class ResultCache:
    """Results on disk under ``cache_dir()/results``, one .npz per (sweep, models, code, device).

    Files are written atomically; one that fails to parse or does not match its key is ignored
    (and overwritten by the next save), never trusted.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.cache_dir() / "results"

    def path_for(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str, meta: dict) -> SweepResults | None:
        from fetaliqa_core import validate

        path = self.path_for(key)
        try:
            if not path.is_file() or path.stat().st_size > validate.MAX_CACHE_FILE_BYTES:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return SweepResults.from_bytes(data, meta)
        except Exception:  # noqa: BLE001 - any damage (zlib, header syntax, ...) means "not cached"
            return None  # never trusted: recomputed and overwritten

    def save(self, key: str, meta: dict, results: SweepResults) -> None:
        path = self.path_for(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if path.is_dir() and not path.is_symlink():
                # an empty folder where the entry goes holds nothing: it makes way (else the
                # sweep was scored again on every run, for good)
                with contextlib.suppress(OSError):
                    path.rmdir()
            atomic_write(path, results.to_bytes(meta))
        except OSError as exc:  # a full or read-only disk must not stop scoring: "not cached"
            if path.is_dir():  # only this entry's name is taken: say that one, not the whole cache
                paths.warn_not_writable(path, exc, "this sweep's entry in the results cache",
                                        "Remove that folder to have this sweep's results kept.")
            else:
                paths.warn_not_writable(self.root, exc, "the results cache")


class ScoringEngine:
    """Scores one sweep with a classifier and/or a segmenter, progressively.

    ``cls`` and ``seg`` are loaded bundles (``fetaliqa_core.models.bundle.LoadedModel``). When
    both are the same joint bundle, one encoder pass yields both outputs.

    Thread safety: :meth:`run` / :meth:`iter_batches` run in one (worker) thread; :meth:`focus`
    and :meth:`cancel` may be called from any thread.
    """

    def __init__(self, sweep, cls=None, seg=None, *, cache: ResultCache | bool = True,
                 batch_size: int | None = None, frames: np.ndarray | None = None) -> None:
        """``frames``: score only these frame indices (a cascade's teacher pass; never cached)."""
        if cls is None and seg is None:
            raise FetalIQAError("No model to score with: choose a classifier and/or a segmenter bundle.")
        check_roles(cls, seg)
        self.sweep = sweep
        self.cls = cls
        self.seg = seg
        self._joint = cls is not None and cls is seg  # one model with both heads: one pass
        model = cls if cls is not None else seg
        self.device = model.device
        self.dtype = model.dtype
        self.batch_size = int(batch_size or getattr(model, "batch_size", 0) or 8)
        if cache is True:
            self.cache: ResultCache | None = ResultCache()
        else:
            self.cache = cache or None
        self.results = SweepResults(sweep.n_frames, has_cls=cls is not None, has_seg=seg is not None)
        self._order = scoring_order(sweep.n_frames)
        self._allowed = np.ones(sweep.n_frames, dtype=bool)
        if frames is not None:
            self._allowed[:] = False
            self._allowed[np.asarray(frames, dtype=np.int64)] = True
            self._order = self._order[self._allowed[self._order]]
            self.cache = None
        self._order_pos = 0
        self._focus: int | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        # where the scoring thread's time went in the last iter_batches (seconds): identifying the
        # sweep for the cache, waiting for prepared batches, the models, turning their output into
        # results, the caller's own work between batches, and writing the cache
        self.timings: dict[str, float] = dict.fromkeys(TIMING_PARTS, 0.0)
        self._in_flight = np.zeros(sweep.n_frames, dtype=bool)

    # -- identity of what is computed ------------------------------------------------------
    def cache_meta(self) -> dict:
        """What the results depend on: the sweep's pixels, the bundles, the number format, and the
        code that computed them (:func:`code_fingerprint`, the libraries' versions) on which kind
        of device (the CPU resizes frames with Pillow, a GPU with torch: the scores differ in the
        third decimal, and a CUDA run's entry was read by a later ``--device cpu`` run that said
        "on cpu")."""
        from fetaliqa_core import __version__
        from fetaliqa_core.preprocess import PREPROCESS_VERSION

        return {
            "engine_version": ENGINE_VERSION,
            "preprocess_version": PREPROCESS_VERSION,
            "program_version": __version__,
            "code": code_fingerprint(),
            "libraries": _library_versions(),
            "device": getattr(self.device, "type", str(self.device)),
            "sweep": self.sweep.content_hash,
            "cls": self.cls.bundle_hash if self.cls is not None else None,
            "seg": self.seg.bundle_hash if self.seg is not None else None,
            "n_frames": self.sweep.n_frames,
            "has_cls": self.cls is not None,
            "has_seg": self.seg is not None,
            "mask_size": self.results.mask_size,
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.cache_meta(), sort_keys=True).encode()).hexdigest()[:40]

    # -- control from other threads ---------------------------------------------------------
    def focus(self, frame: int | None) -> None:
        """Score frames near ``frame`` next (the viewer's cursor); None clears the focus."""
        with self._lock:
            self._focus = None if frame is None else int(np.clip(frame, 0, self.sweep.n_frames - 1))

    def cancel(self) -> None:
        """Stop after the batch in progress; everything finished so far is kept (and cached)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def score_also(self, frames) -> None:
        """Add ``frames`` to what an engine limited to some frames scores (a cascade's teacher
        following a run past the frames first handed to it); the next :meth:`iter_batches`
        scores them."""
        new = np.unique(np.asarray(frames, dtype=np.int64).reshape(-1))
        if len(new) and (new[0] < 0 or new[-1] >= self.sweep.n_frames):
            raise ValueError(f"frame indices must lie in 0..{self.sweep.n_frames - 1}")
        with self._lock:
            new = new[~self._allowed[new]]
            self._allowed[new] = True
            self._order = np.concatenate([self._order[self._order_pos:], new])
            self._order_pos = 0

    # -- scheduling ------------------------------------------------------------------------
    def _next_indices(self, n: int) -> np.ndarray:
        with self._lock:
            busy = self.results.done | self._in_flight | ~self._allowed
            picked: list[int] = []
            if self._focus is not None:
                lo = max(0, self._focus - FOCUS_RADIUS)
                hi = min(self.sweep.n_frames, self._focus + FOCUS_RADIUS + 1)
                near = np.arange(lo, hi)
                near = near[~busy[near]]
                near = near[np.argsort(np.abs(near - self._focus), kind="stable")]
                picked.extend(near[:n].tolist())
                if len(near) <= n:
                    self._focus = None  # neighbourhood covered
            while len(picked) < n and self._order_pos < len(self._order):
                i = int(self._order[self._order_pos])
                self._order_pos += 1
                if not busy[i] and i not in picked:
                    picked.append(i)
            idx = np.array(sorted(picked), dtype=np.int64)
            self._in_flight[idx] = True
            return idx

    def _release(self, idx: np.ndarray) -> None:
        with self._lock:
            self._in_flight[idx] = False
            # Frames not finished go back into the queue.
            unfinished = idx[~self.results.done[idx]]
            if len(unfinished):
                self._order = np.concatenate([unfinished, self._order[self._order_pos:]])
                self._order_pos = 0

    # -- work ------------------------------------------------------------------------------
    def _prepare(self, idx: np.ndarray):
        from fetaliqa_core.preprocess import preprocess_frames

        frames = np.ascontiguousarray(self.sweep.frames[idx])
        if self.device.type == "cuda":
            import torch

            # Page-locked memory: the upload runs asynchronously, off this preparing thread.
            frames = torch.from_numpy(frames).pin_memory()
        return preprocess_frames(frames, device=self.device, dtype=self.dtype)

    def _infer(self, x) -> tuple[object, object]:
        """-> (p_cls (B,) or None, labels (B, S, S) uint8 or None), CPU tensors."""
        if self._joint:
            pred = self.cls.predict_labels(x)
            return pred.p_cls, pred.labels
        p_cls = self.cls.predict_labels(x).p_cls if self.cls is not None else None
        labels = self.seg.predict_labels(x).labels if self.seg is not None else None
        return p_cls, labels

    def _infer_with_backoff(self, idx: np.ndarray, x):
        """Run the models; on a CUDA out-of-memory error halve the batch and go on."""
        import torch

        try:
            return [(idx, *self._infer(x))]
        except torch.OutOfMemoryError:
            if len(idx) == 1:
                raise FetalIQAError(
                    "The GPU ran out of memory on a single frame. Close other programs using "
                    "the GPU or choose the CPU device.") from None
            torch.cuda.empty_cache()
            self.batch_size = max(1, len(idx) // 2)
            half = len(idx) // 2
            return (self._infer_with_backoff(idx[:half], x[:half])
                    + self._infer_with_backoff(idx[half:], x[half:]))

    def _batch_result(self, idx, p_cls, labels, t0: float, n_at_start: int) -> BatchResult:
        p_cls_np = None if p_cls is None else p_cls.float().numpy().reshape(-1)
        p_seg = p_opt = area = None
        masks: list[np.ndarray] = []
        if labels is not None:
            lab = labels.numpy()  # (B, S, S) uint8
            fg = lab > 0
            area = fg.sum(axis=(1, 2)).astype(np.int32)
            if self.seg.manifest.n_classes == 3:
                opt = (lab == 1).sum(axis=(1, 2)).astype(np.float32)
                with np.errstate(invalid="ignore", divide="ignore"):
                    p_opt = np.where(area > 0, opt / area, np.nan).astype(np.float32)
            else:
                p_opt = np.full(len(idx), np.nan, np.float32)
            p_seg = seg_score_from_area(area / float(lab.shape[1] * lab.shape[2]))
            masks = list(lab)
        elapsed = max(time.perf_counter() - t0, 1e-6)
        n_done = self.results.n_done + len(idx)
        return BatchResult(idx, p_cls_np, p_seg, p_opt, area, masks, n_done, self.sweep.n_frames,
                           (n_done - n_at_start) / elapsed)

    def iter_batches(self) -> Iterator[BatchResult]:
        """Yield results batch by batch until every frame is scored or :meth:`cancel` is called.

        A complete cached result is yielded as one batch without running a model; a partial one
        is loaded and scoring goes on from there.
        """
        spent = self.timings = dict.fromkeys(TIMING_PARTS, 0.0)
        clock = time.perf_counter
        key = meta = None
        if self.cache is not None:
            t = clock()
            meta = self.cache_meta()
            key = self.cache_key()
            spent["cache_key"] += clock() - t
            cached = self.cache.load(key, meta)
            if cached is not None:
                self.results = cached
                idx = np.flatnonzero(cached.done)
                if len(idx):
                    yield BatchResult(
                        idx, cached.p_cls[idx] if cached.has_cls else None,
                        cached.p_seg[idx] if cached.has_seg else None,
                        cached.p_opt[idx] if cached.has_seg else None,
                        cached.seg_area_px[idx] if cached.has_seg else None,
                        [cached.masks[int(i)] for i in idx] if cached.has_seg else [],
                        cached.n_done, self.sweep.n_frames, 0.0, from_cache=True)
        t0 = time.perf_counter()
        n_at_start = self.results.n_done
        computed = False
        last_save = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetaliqa-prep")
        try:
            pending: tuple[np.ndarray, Future] | None = None
            # A fresh sweep starts with a one-frame batch: the first result appears after one
            # frame's inference instead of a whole batch's (seconds per frame on a CPU).
            first_size = 1 if self.results.n_done == 0 else self.batch_size
            while not self._cancel.is_set():
                if pending is None:
                    idx = self._next_indices(first_size)
                    first_size = self.batch_size
                    if not len(idx):
                        break
                    pending = (idx, pool.submit(self._prepare, idx))
                idx, fut = pending
                t = clock()
                x = fut.result()
                spent["wait_prepare"] += clock() - t
                # Prepare the next batch while this one runs through the model.
                nxt = self._next_indices(self.batch_size)
                pending = (nxt, pool.submit(self._prepare, nxt)) if len(nxt) else None
                t = clock()
                try:
                    parts = self._infer_with_backoff(idx, x)
                finally:
                    del x
                spent["infer"] += clock() - t
                computed = True
                for part_idx, p_cls, labels in parts:
                    t = clock()
                    batch = self._batch_result(part_idx, p_cls, labels, t0, n_at_start)
                    self.results.apply(batch)
                    self._release(part_idx)
                    spent["results"] += clock() - t
                    t = clock()
                    yield batch
                    spent["caller"] += clock() - t
                if self.cache is not None and time.monotonic() - last_save > CHECKPOINT_SECONDS:
                    t = clock()
                    self.cache.save(key, meta, self.results)
                    spent["cache_save"] += clock() - t
                    last_save = time.monotonic()
            if pending is not None:
                pending[1].cancel()
                self._release(pending[0])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            with self._lock:
                self._in_flight[:] = False
            if self.cache is not None and computed:
                t = clock()
                self.cache.save(key, meta, self.results)
                spent["cache_save"] += clock() - t

    def run(self, on_batch: Callable[[BatchResult], None] | None = None) -> SweepResults:
        """Score until complete or cancelled, calling ``on_batch`` after each batch."""
        for batch in self.iter_batches():
            if on_batch is not None:
                on_batch(batch)
        return self.results
