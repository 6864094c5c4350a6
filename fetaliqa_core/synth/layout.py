"""Where things are in a synthetic sweep: the labelled abdomen pass and the distractors a blind
sweep really crosses (head, thorax, the body cut lengthwise, limbs, an abdomen cut by the fan
edge, acoustic shadows). Every draw comes from the case's layout generator, so the same seed
gives the same layout at any frame size."""

from __future__ import annotations

import math

import numpy as np

from fetaliqa_core.synth.anatomy import Blob, BodyTrack, Sagittal
from fetaliqa_core.synth.fan import Fan
from fetaliqa_core.synth.render import Shadow


def _frames(rng: np.random.Generator, lo: float, hi: float, fps: int, floor: float = 2.0) -> float:
    """A number of frames drawn for a 140-frame sweep, scaled to ``fps``."""
    return max(floor, rng.uniform(lo, hi) * fps / 140.0)


def make_body_track(rng: np.random.Generator, fan: Fan, fps: int, a: float, ratio: float,
                    wall_depth: float, optimal: bool, brightness: float) -> BodyTrack:
    """The trunk crossing the sweep's planes: the abdomen (labelled run) in the middle, pelvis
    before, thorax (and maybe the head) after. The optimal frames' ellipse lies inside the fan."""
    half = _frames(rng, 6.0, 13.0, fps)
    u1 = rng.uniform(0.35, 0.6)
    lo = half + 1
    hi = fps - 2 - half
    centre = float(rng.uniform(lo, hi)) if hi > lo else (fps - 1) / 2.0
    centre = float(round(centre))
    spin = math.radians(rng.normal(0.0, 0.3))
    vx, vy = rng.normal(0.0, 0.7) * fan.s, rng.normal(0.0, 0.4) * fan.s
    angle = rng.uniform(-0.5, 0.5) + (math.pi / 2 if rng.random() < 0.3 else 0.0)
    b = a * ratio
    n_opt = int(math.floor(u1 * half + 1e-9))
    deepest = 0.95 * fan.g.depth_range
    for attempt in range(400):
        if attempt and attempt % 40 == 0:
            a *= 0.95
            b *= 0.95
        depth = rng.uniform(wall_depth * fan.s + b * 0.9, deepest * fan.s) / fan.s
        theta = rng.uniform(-0.7, 0.7) * fan.g.half_angle
        cx, cy = fan.frame_point(depth, theta)
        ok = True
        for df in range(-n_opt, n_opt + 1):
            if not fan.ellipse_inside(cx + vx * df, cy + vy * df, a, b, angle + spin * df):
                ok = False
                break
        if ok:
            break
    return BodyTrack(centre=centre, half=half, u1=u1, cx=cx, cy=cy, vx=vx, vy=vy, a=a, b=b, angle=angle,
                     spin=spin, spine_at=rng.uniform(0, 2 * math.pi), stomach_side=rng.choice([-1.0, 1.0]),
                     optimal=optimal, head=rng.random() < 0.5, brightness=brightness + rng.normal(0, 0.7))


def add_gaps(rng: np.random.Generator, track: BodyTrack, fps: int) -> None:
    """With some chance, the fetus (or the probe) moves out of the plane for 1-3 frames inside the
    labelled run: those frames show the thorax and are not annotated, so the run has gaps."""
    first = int(math.ceil(track.centre - track.half))
    last = int(math.floor(track.centre + track.half))
    if rng.random() >= 0.35 or last - first < 4:
        return
    gaps: set[int] = set()
    for _ in range(int(rng.integers(1, 3))):
        length = int(round(_frames(rng, 1.0, 3.0, fps, floor=1.0)))
        start = int(rng.integers(first + 1, max(first + 2, last - length)))
        gaps.update(range(start, min(start + length, last)))
    track.gaps = frozenset(g for g in gaps if 0 <= g < fps)


def _random_centre(rng: np.random.Generator, fan: Fan, wall_depth: float, size: float) -> tuple[float, float]:
    depth = rng.uniform(wall_depth + size / fan.s * 0.6, 0.9 * fan.g.depth_range)
    return fan.frame_point(depth, rng.uniform(-0.8, 0.8) * fan.g.half_angle)


def make_sagittal(rng: np.random.Generator, fan: Fan, fps: int, a: float, wall_depth: float,
                  brightness: float) -> Sagittal:
    half = _frames(rng, 12.0, 28.0, fps)
    centre = rng.uniform(0, fps)
    b = a * rng.uniform(0.7, 0.85)
    cx, cy = _random_centre(rng, fan, wall_depth, b)
    return Sagittal(centre=centre, half=half, cx=cx, cy=cy, a=a * rng.uniform(1.9, 2.5), b=b,
                    angle=rng.uniform(-0.35, 0.35) + (math.pi if rng.random() < 0.5 else 0.0),
                    vx=rng.normal(0, 0.6) * fan.s, vy=rng.normal(0, 0.4) * fan.s,
                    spine_side=rng.choice([-1.0, 1.0]), brightness=brightness + rng.normal(0, 1.0))


def make_blob(rng: np.random.Generator, fan: Fan, fps: int, a: float, wall_depth: float,
              brightness: float, kind: str) -> Blob:
    """A head (skull ring, midline echo) or a limb section passing through a run of frames."""
    if kind == "head":
        half = _frames(rng, 8.0, 18.0, fps)
        size = a * rng.uniform(0.7, 1.1)
        bb = size * rng.uniform(0.78, 0.92)
    else:
        half = _frames(rng, 4.0, 12.0, fps, floor=1.5)
        size = a * rng.uniform(0.15, 0.35)
        bb = size * rng.uniform(0.6, 0.95)
    cx, cy = _random_centre(rng, fan, wall_depth, bb)
    return Blob(centre=rng.uniform(0, fps), half=half, cx=cx, cy=cy, a=size, b=bb,
                angle=rng.uniform(0, math.pi), vx=rng.normal(0, 0.6) * fan.s, vy=rng.normal(0, 0.4) * fan.s,
                kind=kind, brightness=brightness + rng.normal(0, 1.0))


def make_thorax_pass(rng: np.random.Generator, fan: Fan, fps: int, a: float, wall_depth: float,
                     brightness: float) -> BodyTrack:
    """The trunk passing at thorax level only (ribs, heart), maybe up to the head: unlabelled."""
    t = make_body_track(rng, fan, fps, a * 0.95, rng.uniform(0.8, 0.95), wall_depth, optimal=False,
                        brightness=brightness)
    t.u_min = 1.05          # nothing below the thorax is drawn
    t.optimal = True        # full-shape (not oblique) section
    t.labelled = False
    t.centre -= 1.6 * t.half
    return t


def make_fan_cut_abdomen(rng: np.random.Generator, fan: Fan, fps: int, a: float, ratio: float,
                         wall_depth: float, brightness: float) -> BodyTrack:
    """An abdomen whose centre lies outside the fan's side edge (less than half of it visible):
    not measurable, not annotated."""
    t = make_body_track(rng, fan, fps, a, ratio, wall_depth, optimal=True, brightness=brightness)
    side = rng.choice([-1.0, 1.0])
    r, _ = fan.polar_of(t.cx, t.cy)
    g = fan.g
    t.cx, t.cy = fan.frame_point(r - g.r_in, side * g.half_angle * rng.uniform(1.0, 1.25))
    t.vx = 0.0
    t.u_min, t.u_max, t.head = -1.2, 1.2, False
    t.labelled = False
    return t


def make_shadows(rng: np.random.Generator, fan: Fan, fps: int) -> list[tuple[int, int, Shadow]]:
    """Acoustic shadows over runs of frames: ``(first frame, end frame, shadow)``."""
    out = []
    if rng.random() >= 0.45:
        return out
    g = fan.g
    for _ in range(int(rng.integers(1, 3))):
        f0 = int(rng.integers(0, fps))
        f1 = int(min(fps, f0 + round(_frames(rng, 10.0, 70.0, fps, floor=1.0))))
        sh = Shadow(theta=rng.uniform(-0.9, 0.9) * g.half_angle, half=rng.uniform(0.015, 0.09),
                    depth=rng.uniform(20.0, 0.7 * g.depth_range), db=rng.uniform(8.0, 28.0))
        out.append((f0, f1, sh))
    return out


def section_distractors(rng: np.random.Generator, fan: Fan, fps: int, a: float, ratio: float, wall_depth: float,
                        brightness: float) -> list:
    """Unlabelled fetal parts in a sweep that cuts the fetus across but misses the abdominal plane."""
    tracks: list = []
    if rng.random() < 0.45:
        tracks.append(make_blob(rng, fan, fps, a, wall_depth, brightness, "head"))
    for _ in range(int(rng.integers(0, 3))):
        tracks.append(make_blob(rng, fan, fps, a, wall_depth, brightness, "limb"))
    if rng.random() < 0.4:
        tracks.append(make_thorax_pass(rng, fan, fps, a, wall_depth, brightness))
    if rng.random() < 0.25:
        tracks.append(make_fan_cut_abdomen(rng, fan, fps, a, ratio, wall_depth, brightness))
    return tracks


def lengthwise_distractors(rng: np.random.Generator, fan: Fan, fps: int, a: float, wall_depth: float,
                           brightness: float) -> list:
    """What a sweep along the fetus shows: the body cut lengthwise, limbs, sometimes the head."""
    tracks: list = []
    if rng.random() < 0.75:
        tracks.append(make_sagittal(rng, fan, fps, a, wall_depth, brightness))
    if rng.random() < 0.4:
        tracks.append(make_blob(rng, fan, fps, a, wall_depth, brightness, "limb"))
    if rng.random() < 0.2:
        tracks.append(make_blob(rng, fan, fps, a, wall_depth, brightness, "head"))
    return tracks
