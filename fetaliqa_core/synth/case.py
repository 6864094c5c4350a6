"""One synthetic case: the layout of its sweeps, the frames and the label mask."""

from __future__ import annotations

import hashlib
import uuid as uuid_mod
from dataclasses import dataclass, field

import numpy as np

from fetaliqa_core import acouslic
from fetaliqa_core.analysis.ac import ramanujan_circumference
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.synth import layout
from fetaliqa_core.synth.anatomy import BodyTrack, Ellipse
from fetaliqa_core.synth.fan import ACOUSLIC_FAN, Fan, FanGeometry, random_geometry
from fetaliqa_core.synth.render import CaseRenderer, draw_mask

SYNTH_VERSION = 3
DEFAULT_HEIGHT, DEFAULT_WIDTH = acouslic.FRAME_SHAPE
DEFAULT_SPACING_MM = acouslic.SPACING_MM
DEFAULT_SWEEPS = acouslic.SWEEPS
DEFAULT_FRAMES_PER_SWEEP = acouslic.FRAMES_PER_SWEEP
CASE_KINDS = ("optimal", "suboptimal", "none")
#: Share of cases by kind (ACOUSLIC-AI: about 187 of 300 cases have an optimal frame).
KIND_SHARES = (0.64, 0.22, 0.14)
#: Chance that the fetus lies across the maternal axis: then the sagittal sweeps cut it
#: transversely (and may hold the abdominal plane) while the transverse ones cut it lengthwise.
ACROSS_SHARE = 0.25


@dataclass(eq=False)
class SynthCase:
    """One synthetic case.

    ``frames``: ``(N, H, W)`` uint8; ``mask``: ``(N, H, W)`` uint8 labels 0/1/2;
    ``ac_mm``: per sweep, the abdominal circumference in mm, or None for a sweep without
    annotated frames (every annotated sweep has one, as in ACOUSLIC-AI).
    """

    frames: np.ndarray
    mask: np.ndarray
    ac_mm: list[float | None]
    spacing_mm: tuple[float, float]
    sweep_ranges: list[tuple[int, int]]
    sweep_kinds: list[str]
    seed: int
    uuid: str
    kind: str                     # what the mask holds: "optimal" | "suboptimal" | "none"
    abdomen_sweeps: list[int] = field(default_factory=list)  # zero-based sweep indices
    across: bool = False          # the fetus lies across the maternal axis
    fan: FanGeometry = ACOUSLIC_FAN  # another geometry with ``fan_variety``

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def case_uuid(seed: int) -> str:
    """Deterministic UUID (version 4 layout) for a case seed."""
    digest = hashlib.blake2b(f"fetaliqa-synth-case-{seed}".encode(), digest_size=16).digest()
    return str(uuid_mod.UUID(bytes=digest, version=4))


def case_seed(dataset_seed: int, index: int) -> int:
    """Seed of case ``index`` in a dataset generated with ``dataset_seed``."""
    state = np.random.SeedSequence([int(dataset_seed) & 0xFFFFFFFF, index]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def sweep_kinds(n_sweeps: int) -> list[str]:
    if n_sweeps == 6:
        return ["transverse"] * 3 + ["sagittal"] * 3
    n_t = (n_sweeps + 1) // 2
    return ["transverse"] * n_t + ["sagittal"] * (n_sweeps - n_t)


def synthesize_case(seed: int, n_sweeps: int = DEFAULT_SWEEPS, frames_per_sweep: int = DEFAULT_FRAMES_PER_SWEEP,
                    height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH, *, kind: str | None = None,
                    spacing_mm: float = DEFAULT_SPACING_MM, fan_variety: bool = False,
                    labels_only: bool = False) -> SynthCase:
    """Make one case. ``kind`` forces "optimal" (abdomen with label-1 frames), "suboptimal"
    (abdomen, label 2 only) or "none" (no abdomen); by default drawn with :data:`KIND_SHARES`.
    ``fan_variety``: half of the cases get another fan geometry than ACOUSLIC-AI's (the layout
    is the same with or without it). ``labels_only``: draw the layout, masks and circumferences
    but leave the frames black (fast label statistics; the labels are those of the full case).

    Returns frames and mask of shape ``(n_sweeps * frames_per_sweep, height, width)`` uint8.
    """
    if n_sweeps < 1 or frames_per_sweep < 1:
        raise FetalIQAError(f"synthetic case: need at least 1 sweep and 1 frame per sweep "
                            f"(got {n_sweeps} sweeps x {frames_per_sweep} frames).")
    if height < 32 or width < 32:
        raise FetalIQAError(f"synthetic case: frames of {height} x {width} pixels are too small; use at "
                            "least 32 x 32.")
    if kind is not None and kind not in CASE_KINDS:
        raise ValueError(f"kind must be one of {CASE_KINDS}, got {kind!r}")
    # Two streams: ``rng`` decides the case's structure (kind, sweeps, sizes, positions), so the
    # same seed gives the same case at any frame size; ``noise`` draws speckle and texture.
    layout_seq, noise_seq = np.random.SeedSequence(int(seed)).spawn(2)
    rng = np.random.default_rng(layout_seq)
    other_fan = rng.random() < 0.5
    geometry = random_geometry(rng)
    if not (fan_variety and other_fan):
        geometry = ACOUSLIC_FAN
    fan = Fan(height, width, geometry)
    r = CaseRenderer(np.random.default_rng(noise_seq), fan, speckle_scale=rng.uniform(0.7, 1.5),
                     db_range=rng.uniform(50.0, 75.0))
    s = fan.s
    fps = frames_per_sweep
    n = n_sweeps * fps
    kinds = sweep_kinds(n_sweeps)
    ranges = [(i * fps, (i + 1) * fps) for i in range(n_sweeps)]
    frames = np.empty((n, height, width), dtype=np.uint8)
    mask = np.zeros((n, height, width), dtype=np.uint8)

    roll = rng.random()
    if kind is None:
        kind = CASE_KINDS[int(np.searchsorted(np.cumsum(KIND_SHARES), roll, side="right").clip(0, 2))]
    across = bool(rng.random() < ACROSS_SHARE) and n_sweeps > 1
    section = [i for i, k in enumerate(kinds) if (k == "transverse") != across]
    if kind != "none" and not section:
        kind = "none"
    abdomen_sweeps: list[int] = []
    if kind != "none":
        n_abd = 2 if (len(section) > 1 and rng.random() < 0.35) else 1
        abdomen_sweeps = sorted(int(v) for v in rng.choice(section, size=n_abd, replace=False))

    # Case-level anatomy (reference px = 0.28 mm at full size).
    wall = {"fat": rng.uniform(12, 55), "muscle": rng.uniform(12, 30), "myo": rng.uniform(12, 35)}
    wall_depth = 4.0 + wall["fat"] + wall["muscle"] + wall["myo"]
    ac_target = rng.uniform(150.0, 350.0)                 # mm, at full size
    ratio = rng.uniform(0.8, 0.95)
    a_ref = ac_target / DEFAULT_SPACING_MM / ramanujan_circumference(1.0, ratio)
    case_bright = rng.normal(0.0, 1.5)
    case_gain = rng.normal(0.0, 2.5)

    ac_mm: list[float | None] = [None] * n_sweeps
    sweep_optimal = {}
    for j, sw in enumerate(abdomen_sweeps):
        sweep_optimal[sw] = kind == "optimal" and (j == 0 or rng.random() < 0.6)
    depth_max = 0.95 * geometry.depth_range
    for sw in range(n_sweeps):
        start = sw * fps
        bg = r.background(rng, wall, cavity_bottom=rng.uniform(0.62, 0.94) * depth_max)
        tracks: list = []
        if sw in abdomen_sweeps:
            track = layout.make_body_track(rng, fan, fps, a_ref * s * rng.uniform(0.97, 1.03), ratio, wall_depth,
                                           optimal=sweep_optimal[sw], brightness=case_bright)
            layout.add_gaps(rng, track, fps)
            tracks.append(track)
            if rng.random() < 0.3:
                tracks.append(layout.make_blob(rng, fan, fps, a_ref * s, wall_depth, case_bright, "limb"))
        elif sw in section:
            tracks += layout.section_distractors(rng, fan, fps, a_ref * s, ratio, wall_depth, case_bright)
        else:
            tracks += layout.lengthwise_distractors(rng, fan, fps, a_ref * s, wall_depth, case_bright)
        shadows = layout.make_shadows(rng, fan, fps)
        # Gain events: probe lifting at the start/end, lateral contact loss.
        fade_in = int(rng.integers(0, max(2, fps // 20))) if rng.random() < 0.5 else 0
        fade_out = int(rng.integers(0, max(2, fps // 20))) if rng.random() < 0.5 else 0
        contact = None
        if rng.random() < 0.4:
            side = rng.choice([-1.0, 1.0])
            edge = side * rng.uniform(0.1, 0.45) * geometry.half_angle / ACOUSLIC_FAN.half_angle
            steep = 1.0 / rng.uniform(0.02, 0.06)
            contact = (-rng.uniform(12, 30) / (1.0 + np.exp(-(fan.theta - edge) * side * steep))).astype(np.float32)
            c0 = int(rng.integers(0, fps))
            c1 = int(min(fps, c0 + rng.integers(fps // 6 + 1, fps // 2 + 2)))
        tex_y = rng.uniform(0, r.tpad - 1)
        tex_x = rng.uniform(0, r.tpad - 1)
        tex_vy, tex_vx = rng.normal(0, 0.25), rng.normal(0, 0.4)
        for f in range(fps):
            i = start + f
            prims: list[Ellipse] = []
            for t in tracks if not labels_only else ():
                prims += t.prims(f)
            gain = case_gain
            if fade_in and f < fade_in:
                gain -= 30.0 * (1.0 - f / fade_in)
            if fade_out and f >= fps - fade_out:
                gain -= 30.0 * (1.0 - (fps - 1 - f) / fade_out)
            col = contact if (contact is not None and c0 <= f < c1) else None
            oy = int(np.clip(tex_y + tex_vy * f, 0, r.tpad - 1))
            ox = int(np.clip(tex_x + tex_vx * f, 0, r.tpad - 1))
            active = [sh for f0, f1, sh in shadows if f0 <= f < f1]
            if labels_only:
                frames[i] = 0
            else:
                r.render_frame(bg, f, (oy, ox), prims, gain, col, frames[i], shadows=active)
            for t in tracks:
                if isinstance(t, BodyTrack):
                    lab = t.label(f)
                    if lab:
                        cx, cy, ang = t.pose(f)
                        a, b = t.axes(f)
                        draw_mask(fan, mask[i], cx, cy, a, b, ang, lab)
        # Every annotated sweep has its AC: the abdomen's full-size section in this sweep
        # (the optimal plane's when it has one).
        if sw in abdomen_sweeps and mask[start:start + fps].any():
            a, b = tracks[0].a, tracks[0].b * (1.0 if tracks[0].optimal else 0.82)
            ac_mm[sw] = round(ramanujan_circumference(a, b) * spacing_mm, 2)

    # the kind written, from the mask: with few frames per sweep an optimal plane can fall between
    # frames (and a short track can leave no label at all), and "optimal" was printed for a case
    # whose mask held no label-1 frame
    written = "optimal" if (mask == 1).any() else "suboptimal" if (mask == 2).any() else "none"
    return SynthCase(frames=frames, mask=mask, ac_mm=ac_mm, spacing_mm=(spacing_mm, spacing_mm),
                     sweep_ranges=ranges, sweep_kinds=kinds, seed=int(seed), uuid=case_uuid(seed),
                     kind=written, abdomen_sweeps=abdomen_sweeps, across=across, fan=geometry)
