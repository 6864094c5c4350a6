"""Synthetic blind-sweep cases in the ACOUSLIC-AI layout.

Each case is a stack of sweeps (default: 6 sweeps x 140 frames of 562 x 744 pixels, spacing
0.28 mm; sweeps 1-3 transverse, 4-6 sagittal) with a label mask (0 background, 1 optimal,
2 suboptimal plane) and the abdominal circumference per sweep.

How a frame is made (everything in dB, then log-compressed to 8 bit):

* The frame is built on a polar grid (depth x scan line), as a scanner does, and scan-converted
  to the real ACOUSLIC fan (``resources/acouslic_fov_mask.mha``) with ``cv2.remap``.
* Maternal tissue layers (skin, fat with bright septa, muscle, fascia, myometrium, placenta,
  amniotic fluid, deep tissue) are depth bands that follow the fan curvature, with wavy
  boundaries that drift slowly from frame to frame.
* Each pixel carries an echo level and an attenuation; the attenuation is accumulated along
  depth, so fluid gives posterior enhancement and bone (spine, skull, ribs) casts a shadow.
  A time-gain compensation curve offsets the average tissue loss.
* Speckle is the magnitude of smoothed complex Gaussian noise (Rayleigh statistics), drawn
  from a precomputed bank with a random offset per frame.
* The fetus is a set of ellipses: in a transverse sweep the abdominal cross-section grows,
  stays (the optimal frames: label 1), shrinks (label 2), passes into the thorax (ribs,
  heart) and may reach the head; the abdomen shows the stomach bubble, the umbilical vein and
  the spine with its shadow. Sagittal sweeps show the elongated body and head, unlabelled,
  and transverse sweeps may show the head or limbs, unlabelled: a model has to learn what the
  abdominal plane looks like, not just "a round thing".

The mask of a labelled frame is the abdomen ellipse clipped to the field of view; the CSV
circumference is that ellipse's circumference (Ramanujan), in mm, for sweeps with label-1
frames. All label-1 frames of a sweep show the same ellipse size, so each measures that value.

Everything is drawn from one ``numpy.random.Generator`` seeded by the case seed: same seed, same
bytes.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetaliqa_core import acouslic
from fetaliqa_core.analysis.ac import ramanujan_circumference
from fetaliqa_core.errors import FetalIQAError

SYNTH_VERSION = 1
DEFAULT_HEIGHT, DEFAULT_WIDTH = acouslic.FRAME_SHAPE
DEFAULT_SPACING_MM = acouslic.SPACING_MM
DEFAULT_SWEEPS = acouslic.SWEEPS
DEFAULT_FRAMES_PER_SWEEP = acouslic.FRAMES_PER_SWEEP
#: Seed of the demo case: abdomen with optimal frames in transverse sweeps 1 and 2.
DEMO_SEED = 21
CASE_KINDS = ("optimal", "suboptimal", "none")

# Fan geometry of the ACOUSLIC frames (measured on the FOV mask, 562 x 744 pixels): apex above
# the image, inner (probe face) and outer radius, half opening angle.
_REF_H, _REF_W = acouslic.FRAME_SHAPE
_APEX_Y, _APEX_X = -183.83, 372.0
_R_IN, _R_OUT = 212.3, 746.3
_HALF_ANGLE = math.radians(29.885)

# Polar grid at full size: samples along depth, scan lines; upsampling before scan conversion.
_POLAR_ROWS = 320
_POLAR_LINES = 224
_UPSAMPLE = 2

# Display: grey = (dB - _DB_LOW) * 255 / _DB_RANGE
_DB_LOW = -30.0
_DB_RANGE = 62.0
_NOISE_DB = -31.0

# Attenuation in dB per reference pixel (0.28 mm), round trip.
_ATT_TISSUE = 0.05
_ATT_FLUID = 0.004
_ATT_BONE = 1.2
_TGC = 0.032


@dataclass(eq=False)
class SynthCase:
    """One synthetic case.

    ``frames``: ``(N, H, W)`` uint8; ``mask``: ``(N, H, W)`` uint8 labels 0/1/2;
    ``ac_mm``: per sweep, the abdominal circumference in mm or None (sweeps without label 1).
    """

    frames: np.ndarray
    mask: np.ndarray
    ac_mm: list[float | None]
    spacing_mm: tuple[float, float]
    sweep_ranges: list[tuple[int, int]]
    sweep_kinds: list[str]
    seed: int
    uuid: str
    kind: str                     # "optimal" | "suboptimal" | "none"
    abdomen_sweeps: list[int] = field(default_factory=list)  # zero-based sweep indices

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


# --------------------------------------------------------------------------------------------
# Geometry: polar grid <-> frame pixels


class _Fan:
    """Polar (depth x scan line) grid and its scan conversion onto frames of ``height x width``."""

    def __init__(self, height: int, width: int) -> None:
        import cv2

        from fetaliqa_core import acouslic

        self.h, self.w = height, width
        self.sy, self.sx = height / _REF_H, width / _REF_W
        self.s = min(self.sy, self.sx)
        self.fov = np.ascontiguousarray(acouslic.fov_mask((height, width)))
        self.fov_u8 = self.fov.astype(np.uint8)
        # Polar grid, slightly larger than the fan; the FOV mask cuts the exact shape.
        self.n_r = max(32, int(round(_POLAR_ROWS * self.s)))
        self.n_t = max(32, int(round(_POLAR_LINES * self.s)))
        self.r0, self.r1 = _R_IN - 3.0, _R_OUT + 3.0
        self.t0, self.t1 = -_HALF_ANGLE - 0.02, _HALF_ANGLE + 0.02
        self.dr = (self.r1 - self.r0) / (self.n_r - 1)          # reference px per row
        self.dt = (self.t1 - self.t0) / (self.n_t - 1)          # radians per column
        r = (self.r0 + self.dr * np.arange(self.n_r)).astype(np.float32)
        t = (self.t0 + self.dt * np.arange(self.n_t)).astype(np.float32)
        self.depth = r - np.float32(_R_IN)                       # (n_r,) reference px below skin
        self.theta = t
        # Frame-pixel coordinates of each polar sample.
        self.YT = ((_APEX_Y + r[:, None] * np.cos(t)[None, :]) * self.sy).astype(np.float32)
        self.XT = ((_APEX_X + r[:, None] * np.sin(t)[None, :]) * self.sx).astype(np.float32)
        # Scan conversion maps.
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        yr = yy / self.sy - _APEX_Y
        xr = xx / self.sx - _APEX_X
        rr = np.hypot(yr, xr)
        tt = np.arctan2(xr, yr)
        map_r = (rr - self.r0) / self.dr
        map_t = (tt - self.t0) / self.dt
        # Scan conversion = bilinear 2x upsampling of the polar image (cheap, small image) and a
        # nearest-neighbour lookup (3-4x faster than a bilinear remap of the full frame).
        up = _UPSAMPLE
        map_r = (map_r + 0.5) * up - 0.5
        map_t = (map_t + 0.5) * up - 0.5
        map_r[~self.fov] = -10
        map_t[~self.fov] = -10
        self.map_nn, _ = cv2.convertMaps(map_t.astype(np.float32), map_r.astype(np.float32), cv2.CV_16SC2,
                                         nninterpolation=True)
        self.up_size = (self.n_t * up, self.n_r * up)

    def to_frame(self, polar_u8: np.ndarray, out: np.ndarray) -> None:
        import cv2

        big = cv2.resize(polar_u8, self.up_size, interpolation=cv2.INTER_LINEAR)
        cv2.remap(big, self.map_nn, None, cv2.INTER_NEAREST, dst=out,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def frame_point(self, depth_ref: float, theta: float) -> tuple[float, float]:
        """(x, y) frame pixel of a point at ``depth_ref`` reference px below the skin, angle ``theta``."""
        r = _R_IN + depth_ref
        return ((_APEX_X + r * math.sin(theta)) * self.sx, (_APEX_Y + r * math.cos(theta)) * self.sy)

    def polar_of(self, x: float, y: float) -> tuple[float, float]:
        """(radius in reference px, angle) of frame pixel (x, y)."""
        xr, yr = x / self.sx - _APEX_X, y / self.sy - _APEX_Y
        return math.hypot(xr, yr), math.atan2(xr, yr)

    def window(self, x: float, y: float, radius: float) -> tuple[slice, slice] | None:
        """Polar rows/columns that can hold a disc of ``radius`` frame px around (x, y)."""
        rc, tc = self.polar_of(x, y)
        rad = radius / self.s + 2.0
        i0 = int(math.floor((rc - rad - self.r0) / self.dr)) - 1
        i1 = int(math.ceil((rc + rad - self.r0) / self.dr)) + 2
        if rad >= rc:
            j0, j1 = 0, self.n_t
        else:
            dth = math.asin(rad / rc)
            j0 = int(math.floor((tc - dth - self.t0) / self.dt)) - 1
            j1 = int(math.ceil((tc + dth - self.t0) / self.dt)) + 2
        i0, i1 = max(i0, 0), min(i1, self.n_r)
        j0, j1 = max(j0, 0), min(j1, self.n_t)
        if i0 >= i1 or j0 >= j1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def ellipse_inside(self, cx: float, cy: float, a: float, b: float, angle: float, margin: float = 2.0) -> bool:
        """True when the whole ellipse (frame px) lies inside the FOV, ``margin`` px from its edge."""
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        ca, sa = math.cos(angle), math.sin(angle)
        ex = cx + (a + margin) * np.cos(t) * ca - (b + margin) * np.sin(t) * sa
        ey = cy + (a + margin) * np.cos(t) * sa + (b + margin) * np.sin(t) * ca
        xi, yi = np.rint(ex).astype(int), np.rint(ey).astype(int)
        if xi.min() < 0 or yi.min() < 0 or xi.max() >= self.w or yi.max() >= self.h:
            return False
        return bool(self.fov[yi, xi].all())


# --------------------------------------------------------------------------------------------
# Drawing primitives


@dataclass
class _Ellipse:
    """A filled ellipse painted into the polar echo/attenuation maps (frame px, radians)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    echo: float                    # dB
    att: float = _ATT_TISSUE       # dB per reference px
    tex: float = 0.0               # gain of the texture field inside
    rim_echo: float | None = None  # bright rim (skin, skull)
    rim_width: float = 0.08        # fraction of the radius
    rim_att: float = _ATT_TISSUE
    edge: float = 1.2              # soft edge, frame px


def _paint(fan: _Fan, echo: np.ndarray, att: np.ndarray, tex: np.ndarray, p: _Ellipse) -> None:
    if p.a <= 0.05 or p.b <= 0.05:
        return
    win = fan.window(p.cx, p.cy, max(p.a, p.b) + 2)
    if win is None:
        return
    rs, cs = win
    X = fan.XT[rs, cs] - np.float32(p.cx)
    Y = fan.YT[rs, cs] - np.float32(p.cy)
    c, s = np.float32(math.cos(p.angle)), np.float32(math.sin(p.angle))
    u = (X * c + Y * s) * np.float32(1.0 / p.a)
    v = (Y * c - X * s) * np.float32(1.0 / p.b)
    d = np.sqrt(u * u + v * v)
    e = max(p.edge, 0.6) / min(p.a, p.b)
    alpha = np.clip((1.0 - d) / np.float32(e) + 0.5, 0.0, 1.0)
    if not alpha.any():
        return
    E = echo[rs, cs]
    A = att[rs, cs]
    val = p.echo + p.tex * tex[rs, cs] if p.tex else np.float32(p.echo)
    E += alpha * (val - E)
    A += alpha * (np.float32(p.att * fan.dr) - A)
    if p.rim_echo is not None:
        w = max(p.rim_width, 1.5 / min(p.a, p.b))
        ar = np.clip(1.0 - np.abs(d - (1.0 - w / 2)) / np.float32(w / 2), 0.0, 1.0) * alpha
        E += ar * (np.float32(p.rim_echo) - E)
        A += ar * (np.float32(p.rim_att * fan.dr) - A)


def _local(cx: float, cy: float, angle: float, a: float, b: float, u: float, v: float) -> tuple[float, float]:
    """Frame point at local ellipse coordinates (u, v) (fractions of the semi-axes)."""
    c, s = math.cos(angle), math.sin(angle)
    return cx + u * a * c - v * b * s, cy + u * a * s + v * b * c


# --------------------------------------------------------------------------------------------
# Fetal structures


@dataclass
class _BodyTrack:
    """The fetal trunk crossing a transverse sweep: pelvis -> abdomen -> thorax (-> head).

    Frame f has position u = (f - centre) / half; |u| <= u1 is the optimal plateau (full size),
    u1 < |u| <= 1 the suboptimal neighbours, beyond that pelvis (u < -1) or thorax (u > 1)."""

    centre: float
    half: float
    u1: float
    cx: float
    cy: float
    vx: float
    vy: float
    a: float
    b: float
    angle: float
    spin: float
    spine_at: float                # angle (local) of the spine on the ellipse
    stomach_side: float            # +1 / -1: which side of the spine axis holds the stomach
    optimal: bool                  # False: oblique plane, no stomach -> label 2 only
    u_min: float = -1.7
    u_max: float = 2.5
    head: bool = False
    brightness: float = 0.0
    labelled: bool = True          # False: a distractor pass (thorax only), never in the mask

    def u(self, f: int) -> float:
        return (f - self.centre) / self.half

    def scale(self, u: float) -> float:
        au = abs(u)
        if au <= self.u1:
            return 1.0
        if au <= 1.0:
            return 1.0 - 0.3 * ((au - self.u1) / (1.0 - self.u1)) ** 1.5
        if u < 0:  # pelvis: taper to nothing
            x = (-u - 1.0) / (-self.u_min - 1.0)
            return 0.7 * math.sqrt(max(0.0, 1.0 - x * x))
        if u <= 2.0:  # thorax
            return 0.7 + 0.05 * math.sin((u - 1.0) * math.pi)
        x = (u - 2.0) / (self.u_max - 2.0)
        return 0.7 * math.sqrt(max(0.0, 1.0 - x * x))

    def pose(self, f: int) -> tuple[float, float, float]:
        df = f - self.centre
        return self.cx + self.vx * df, self.cy + self.vy * df, self.angle + self.spin * df

    def label(self, f: int) -> int:
        if not self.labelled:
            return 0
        u = self.u(f)
        if abs(u) <= self.u1 and self.optimal:
            return 1
        if abs(u) <= 1.0 + 1e-9:
            return 2
        return 0

    def axes(self, f: int) -> tuple[float, float]:
        sc = self.scale(self.u(f))
        ratio = 1.0 if self.optimal else 0.82
        return self.a * sc, self.b * sc * ratio

    def prims(self, f: int) -> list[_Ellipse]:
        u = self.u(f)
        if u < self.u_min or u > self.u_max + (1.2 if self.head else 0.0):
            return []
        cx, cy, ang = self.pose(f)
        br = self.brightness
        if u > self.u_max:  # the head
            x = (u - self.u_max - 0.6) / 0.6
            sc = math.sqrt(max(0.0, 1.0 - x * x))
            return _head_prims(cx, cy, self.b * 0.95 * sc, self.b * 0.82 * sc, ang, br)
        a, b = self.axes(f)
        if a < 1.0:
            return []
        out = _trunk_prims(cx, cy, a, b, ang, br)
        # Spine: vertebral body and two laminae near the rim, bright bone with a shadow.
        sp = self.spine_at
        su, sv = math.cos(sp), math.sin(sp)
        r_dot = max(0.055 * a, 0.8)
        x, y = _local(cx, cy, ang, a, b, 0.81 * su, 0.81 * sv)
        out.append(_Ellipse(x, y, 0.13 * a, 0.1 * a, ang + sp + math.pi / 2, echo=4.0, att=_ATT_BONE * 0.25,
                            edge=2.0))
        for along, across, k in ((0.74, 0.0, 1.0), (0.86, 0.09, 0.75), (0.86, -0.09, 0.75)):
            x, y = _local(cx, cy, ang, a, b, along * su - across * sv, along * sv + across * su)
            out.append(_Ellipse(x, y, r_dot * k * 1.25, r_dot * k, ang + sp, echo=28.0, att=_ATT_BONE, edge=0.8))
        side = self.stomach_side
        if u < -1.0:  # pelvis: iliac wings, bright lines
            for sgn in (-1.0, 1.0):
                x, y = _local(cx, cy, ang, a, b, 0.35 * su + sgn * 0.45 * (-sv), 0.35 * sv + sgn * 0.45 * su)
                out.append(_Ellipse(x, y, 0.28 * a, 0.04 * a + 0.6, ang + sp + sgn * 0.9, echo=13.0,
                                    att=_ATT_BONE * 0.5, edge=0.8))
        # Stomach: dark fluid bubble on the side opposite the spine (abdomen only).
        if self.optimal and abs(u) <= 0.6:
            st = math.sqrt(max(0.0, 1.0 - (u / 0.6) ** 2))
            x, y = _local(cx, cy, ang, a, b, -0.25 * su + side * 0.35 * (-sv), -0.25 * sv + side * 0.35 * su)
            out.append(_Ellipse(x, y, 0.24 * a * st, 0.15 * a * st, ang + sp + 0.4 * side,
                                echo=-38.0, att=_ATT_FLUID))
        # Umbilical vein: short dark curve in the anterior third (the optimal level).
        if self.optimal and abs(u) <= max(self.u1 * 1.3, 0.2):
            # a short "J": from the anterior wall towards the centre, bending to the stomach side
            for t in np.linspace(0.0, 1.0, 7):
                along = -0.66 + 0.42 * t
                across = -side * 0.22 * t * t
                x, y = _local(cx, cy, ang, a, b, along * su - across * sv, along * sv + across * su)
                out.append(_Ellipse(x, y, 0.06 * a, 0.06 * a, 0.0, echo=-30.0, att=_ATT_FLUID, edge=1.0))
        # Ribs (lower thorax and above): short bright arcs at the sides, with shadows.
        if u > 0.75:
            for sgn in (-1.0, 1.0):
                ra = sp + sgn * 1.35
                x, y = _local(cx, cy, ang, a, b, 0.86 * math.cos(ra), 0.86 * math.sin(ra))
                out.append(_Ellipse(x, y, 0.13 * a, 0.035 * a + 0.5, ang + ra + math.pi / 2, echo=13.0,
                                    att=_ATT_BONE * 0.6, edge=0.8))
        # Heart (thorax): four dark chambers with a bright cross.
        if u > 1.15 and u < 2.1:
            hx, hy = _local(cx, cy, ang, a, b, -0.3 * su, -0.3 * sv)
            out.append(_Ellipse(hx, hy, 0.36 * a, 0.3 * a, ang + sp, echo=0.0 + br, tex=1.0))
            for du, dv in ((-0.1, -0.09), (0.1, -0.09), (-0.1, 0.09), (0.1, 0.09)):
                x, y = _local(cx, cy, ang, a, b, -0.3 * su + du, -0.3 * sv + dv)
                out.append(_Ellipse(x, y, 0.08 * a, 0.07 * a, ang, echo=-34.0, att=_ATT_FLUID))
        return out


def _trunk_prims(cx: float, cy: float, a: float, b: float, ang: float, br: float) -> list[_Ellipse]:
    """Fetal trunk cross-section: bright skin, thin dark subcutaneous layer, textured inside."""
    return [
        _Ellipse(cx, cy, a, b, ang, echo=8.0 + br, tex=1.0),
        _Ellipse(cx, cy, a - 2.2 * max(a / 100, 0.4), b - 2.2 * max(a / 100, 0.4), ang, echo=-13.0 + br, tex=1.0),
        _Ellipse(cx, cy, a * 0.93, b * 0.93, ang, echo=-6.0 + br, tex=2.5, edge=2.5),
    ]


def _head_prims(cx: float, cy: float, a: float, b: float, ang: float, br: float) -> list[_Ellipse]:
    if a < 1.5:
        return []
    out = [_Ellipse(cx, cy, a, b, ang, echo=-13.0 + br, tex=1.0, rim_echo=15.0, rim_width=0.07,
                    rim_att=_ATT_BONE * 0.35)]
    # Midline echo (falx) and two faint thalamic shadows.
    out.append(_Ellipse(cx, cy, a * 0.8, max(0.012 * a, 0.6), ang, echo=6.0))
    for sgn in (-1.0, 1.0):
        x, y = _local(cx, cy, ang, a, b, 0.0, sgn * 0.22)
        out.append(_Ellipse(x, y, 0.2 * a, 0.12 * a, ang, echo=-20.0, att=_ATT_FLUID))
    return out


@dataclass
class _Sagittal:
    """The fetus cut lengthwise: an elongated trunk with a row of vertebrae and the head."""

    centre: float
    half: float
    cx: float
    cy: float
    a: float
    b: float
    angle: float
    vx: float
    vy: float
    spine_side: float
    brightness: float

    def prims(self, f: int) -> list[_Ellipse]:
        u = (f - self.centre) / self.half
        if abs(u) >= 1.0:
            return []
        sc = math.sqrt(1.0 - u * u)
        df = f - self.centre
        cx, cy, ang = self.cx + self.vx * df, self.cy + self.vy * df, self.angle
        a, b = self.a * (0.75 + 0.25 * sc), self.b * sc
        if b < 1.0:
            return []
        br = self.brightness
        out = _trunk_prims(cx, cy, a, b, ang, br)
        hx, hy = _local(cx, cy, ang, a, b, 1.18, 0.1)
        out += _head_prims(hx, hy, self.b * 0.95 * sc, self.b * 0.85 * sc, ang, br)
        # String of vertebrae along the back, only near the midline (|u| small).
        if abs(u) < 0.55:
            n = 11
            r_dot = max(0.03 * a, 0.7)
            for k in range(n):
                t = -0.8 + 1.6 * k / (n - 1)
                x, y = _local(cx, cy, ang, a, b, t, self.spine_side * 0.78 * math.sqrt(max(0.0, 1 - t * t)))
                out.append(_Ellipse(x, y, r_dot, r_dot * 0.8, ang, echo=15.0, att=_ATT_BONE, edge=0.8))
        if abs(u) < 0.8:
            x, y = _local(cx, cy, ang, a, b, 0.05, -self.spine_side * 0.2)
            out.append(_Ellipse(x, y, 0.14 * a * sc, 0.3 * b, ang, echo=-36.0, att=_ATT_FLUID))
            x, y = _local(cx, cy, ang, a, b, 0.55, -self.spine_side * 0.1)
            out.append(_Ellipse(x, y, 0.15 * a, 0.35 * b, ang, echo=-2.0 + br, tex=1.0))
        return out


@dataclass
class _Blob:
    """A small transverse limb section (or a head) passing through a run of frames."""

    centre: float
    half: float
    cx: float
    cy: float
    a: float
    b: float
    angle: float
    vx: float
    vy: float
    kind: str                      # "limb" | "head"
    brightness: float

    def prims(self, f: int) -> list[_Ellipse]:
        u = (f - self.centre) / self.half
        if abs(u) >= 1.0:
            return []
        sc = math.sqrt(1.0 - u * u)
        df = f - self.centre
        cx, cy = self.cx + self.vx * df, self.cy + self.vy * df
        if self.kind == "head":
            return _head_prims(cx, cy, self.a * sc, self.b * sc, self.angle, self.brightness)
        a, b = self.a * (0.6 + 0.4 * sc), self.b * (0.6 + 0.4 * sc)
        out = [_Ellipse(cx, cy, a, b, self.angle, echo=-4.0 + self.brightness, tex=1.5, rim_echo=4.0)]
        out.append(_Ellipse(cx + 0.1 * a, cy - 0.1 * b, 0.28 * a, 0.25 * b, self.angle, echo=16.0,
                            att=_ATT_BONE, edge=0.8))
        return out


# --------------------------------------------------------------------------------------------
# Noise fields


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_r: float, sigma_t: float) -> np.ndarray:
    """Gaussian-smoothed white noise normalised to zero mean, unit std (float32)."""
    import cv2

    n = rng.standard_normal(shape, dtype=np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=max(sigma_t, 0.3), sigmaY=max(sigma_r, 0.3),
                         borderType=cv2.BORDER_REFLECT)
    n -= n.mean()
    n /= max(float(n.std()), 1e-6)
    return n


def _speckle_bank(rng: np.random.Generator, k: int, shape: tuple[int, int], sigma_r: float,
                  sigma_t: float) -> np.ndarray:
    """``k`` speckle fields in dB: 20 log10 of the magnitude of smoothed complex Gaussian noise
    (Rayleigh-distributed amplitude), relative to its RMS."""
    import cv2

    bank = np.empty((k, *shape), dtype=np.float32)
    for i in range(k):
        re = rng.standard_normal(shape, dtype=np.float32)
        im = rng.standard_normal(shape, dtype=np.float32)
        re = cv2.GaussianBlur(re, (0, 0), sigmaX=sigma_t, sigmaY=sigma_r, borderType=cv2.BORDER_REFLECT)
        im = cv2.GaussianBlur(im, (0, 0), sigmaX=sigma_t, sigmaY=sigma_r, borderType=cv2.BORDER_REFLECT)
        power = re * re + im * im
        power /= power.mean()
        bank[i] = 10.0 * np.log10(np.maximum(power, 1e-4))
    return bank


# --------------------------------------------------------------------------------------------
# The case


# Maternal layers, top to bottom: name, echo dB, texture gain, septa gain, attenuation dB/ref px.
# Thin "interface" layers are the bright specular lines at fascia and uterine walls.
_LAYERS = [
    ("skin", 5.0, 1.0, 0.0, _ATT_TISSUE),
    ("fat", -13.0, 1.5, 11.0, _ATT_TISSUE * 0.8),
    ("muscle", -5.0, 2.0, 5.0, _ATT_TISSUE),
    ("fascia", 7.0, 1.0, 0.0, _ATT_TISSUE),
    ("myometrium", -7.0, 2.0, 2.0, _ATT_TISSUE),
    ("uterine_wall", 3.0, 1.0, 0.0, _ATT_TISSUE),
    ("placenta_anterior", -3.0, 2.5, 0.0, _ATT_TISSUE),
    ("fluid", -45.0, 0.0, 0.0, _ATT_FLUID),
    ("uterine_wall_posterior", 4.0, 1.0, 0.0, _ATT_TISSUE),
    ("placenta_posterior", -3.0, 2.5, 0.0, _ATT_TISSUE),
    ("deep", -10.0, 2.5, 3.0, _ATT_TISSUE),
]
_N_BOUNDARIES = len(_LAYERS) - 1


@dataclass
class _SweepBackground:
    """Layer boundaries (reference px below the skin) as functions of scan angle and frame."""

    wall: tuple[float, float, float]            # depth of fat, muscle and myometrium bottoms
    cavity_bottom: float
    amp: np.ndarray                # (4,) waviness of fat, muscle, myometrium, cavity bottom
    freq: np.ndarray
    phase: np.ndarray
    drift: np.ndarray              # phase change per frame
    slope: np.ndarray              # depth change per frame
    pl_ant: tuple[float, float, float, float]   # thickness, centre angle, half width, angle drift per frame
    pl_post: tuple[float, float, float, float]

    def boundaries(self, theta: np.ndarray, f: int) -> np.ndarray:
        """(10, n_t) boundary depths for frame ``f`` (frame index within the sweep), top to bottom."""
        base = np.array([*self.wall, self.cavity_bottom], dtype=np.float32)
        w = (base[:, None] + (self.slope * f)[:, None]
             + self.amp[:, None] * np.sin(self.freq[:, None] * theta[None, :] + (self.phase + self.drift * f)[:, None]))
        fat, muscle, myo, cav = w
        b = np.empty((_N_BOUNDARIES, theta.size), dtype=np.float32)
        b[0] = 4.0
        b[1] = fat
        b[2] = muscle
        b[3] = muscle + 3.0
        b[4] = myo
        b[5] = myo + 2.5
        b[6] = b[5] + _placenta(theta, f, self.pl_ant)
        b[7] = np.maximum(cav, b[6] + 30.0)
        b[8] = b[7] + 3.0
        b[9] = b[8] + _placenta(theta, f, self.pl_post)
        np.maximum.accumulate(b, axis=0, out=b)
        return b


def _placenta(theta: np.ndarray, f: int, p: tuple[float, float, float, float]) -> np.ndarray:
    """Placenta thickness along the scan angle: a flat band with rounded ends."""
    thick, centre, half, drift = p
    if thick <= 0:
        return np.zeros_like(theta)
    x = np.abs(theta - (centre + drift * f)) / half
    return (thick * np.sqrt(np.clip(1.0 - x ** 6, 0.0, 1.0))).astype(np.float32)


class _CaseRenderer:
    def __init__(self, rng: np.random.Generator, fan: _Fan) -> None:
        self.rng = rng
        self.fan = fan
        pad = 24
        self.pad = pad
        shape = (fan.n_r + pad, fan.n_t + pad)
        gs = fan.n_t / _POLAR_LINES  # grid scale (speckle keeps its size in pixels)
        self.speckle = _speckle_bank(rng, 12, shape, sigma_r=0.75 * max(gs, 0.5), sigma_t=0.9 * max(gs, 0.5))
        tpad = 160
        self.tpad = tpad
        tshape = (fan.n_r + tpad, fan.n_t + tpad)
        self.texture = _smooth_noise(rng, tshape, 1.6 * gs, 2.2 * gs)
        self.septa = np.clip(_smooth_noise(rng, tshape, 0.6 * gs, 5.0 * gs) - 1.1, 0.0, None)
        self.lut_echo = np.array([l[1] for l in _LAYERS], dtype=np.float32)
        self.lut_tex = np.array([l[2] for l in _LAYERS], dtype=np.float32)
        self.lut_septa = np.array([l[3] for l in _LAYERS], dtype=np.float32)
        self.lut_att = np.array([l[4] * fan.dr for l in _LAYERS], dtype=np.float32)
        depth = fan.depth
        self.depth_col = depth[:, None]
        self.tgc = (np.float32(_TGC) * np.maximum(depth, 0)).astype(np.float32)[:, None]
        # Near-field reverberation: faint bright bands just below the skin.
        rev = np.zeros_like(depth)
        for k, d in enumerate((16.0, 32.0, 48.0)):
            rev += (4.0 - 1.2 * k) * np.exp(-0.5 * ((depth - d) / 2.0) ** 2)
        self.reverb = rev.astype(np.float32)[:, None]
        # Noise floor with near-field haze (clutter in the fluid just below the wall).
        self.floor = (_NOISE_DB + 9.0 * np.exp(-np.maximum(depth, 0) / 140.0)).astype(np.float32)[:, None]
        self.echo = np.empty((fan.n_r, fan.n_t), dtype=np.float32)
        self.att = np.empty_like(self.echo)
        self.tmp = np.empty_like(self.echo)
        self.tmp2 = np.empty_like(self.echo)
        self.idx = np.empty((fan.n_r, fan.n_t), dtype=np.uint8)

    @staticmethod
    def background(rng: np.random.Generator, wall: dict[str, float], cavity_bottom: float) -> _SweepBackground:
        fat = 4.0 + wall["fat"]
        muscle = fat + wall["muscle"]
        myo = muscle + wall["myo"]
        amp = np.array([rng.uniform(2, 7), rng.uniform(2, 7), rng.uniform(3, 9), rng.uniform(10, 40)])
        freq = rng.uniform(1.5, 6.0, size=4)
        phase = rng.uniform(0, 2 * np.pi, size=4)
        drift = rng.normal(0.0, 0.02, size=4)
        slope = np.array([rng.normal(0, 0.02), rng.normal(0, 0.03), rng.normal(0, 0.04), rng.normal(0, 0.3)])

        def placenta(prob: float) -> tuple[float, float, float, float]:
            if rng.random() >= prob:
                return (0.0, 0.0, 1.0, 0.0)
            return (rng.uniform(30, 85), rng.uniform(-0.6, 0.6), rng.uniform(0.5, 1.3), rng.normal(0, 0.006))

        return _SweepBackground(wall=(fat, muscle, myo), cavity_bottom=cavity_bottom, amp=amp, freq=freq,
                                phase=phase, drift=drift, slope=slope, pl_ant=placenta(0.45),
                                pl_post=placenta(0.35))

    def render_frame(self, bg: _SweepBackground, f: int, tex_offset: tuple[int, int],
                     prims: list[_Ellipse], gain_db: float, col_gain: np.ndarray | None,
                     out: np.ndarray) -> None:
        """Render frame ``f`` of a sweep into ``out`` ``(H, W)`` uint8."""
        fan, rng = self.fan, self.rng
        n_r, n_t = fan.n_r, fan.n_t
        b = bg.boundaries(fan.theta, f)
        idx = self.idx
        idx.fill(0)
        depth = self.depth_col
        for k in range(_N_BOUNDARIES):
            np.add(idx, depth > b[k][None, :], out=idx, casting="unsafe")
        oy, ox = tex_offset
        tex = self.texture[oy:oy + n_r, ox:ox + n_t]
        septa = self.septa[oy:oy + n_r, ox:ox + n_t]
        echo, att, tmp = self.echo, self.att, self.tmp
        np.take(self.lut_echo, idx, out=echo)
        np.take(self.lut_tex, idx, out=tmp)
        tmp *= tex
        echo += tmp
        np.take(self.lut_septa, idx, out=tmp)
        tmp *= septa
        echo += tmp
        echo += self.reverb
        np.take(self.lut_att, idx, out=att)
        for p in prims:
            _paint(fan, echo, att, tex, p)
        np.cumsum(att, axis=0, out=att)
        k = int(rng.integers(self.speckle.shape[0]))
        sy, sx = (int(v) for v in rng.integers(0, self.pad, size=2))
        spk = self.speckle[k, sy:sy + n_r, sx:sx + n_t]
        total = tmp
        np.subtract(echo, att, out=total)
        total += self.tgc
        total += spk
        if col_gain is not None:
            total += col_gain[None, :]
        floor = self.tmp2
        np.multiply(spk, np.float32(0.6), out=floor)
        floor += self.floor
        np.maximum(total, floor, out=total)
        # grey = (dB + gain - low) * 255 / range
        scale = np.float32(255.0 / _DB_RANGE)
        total *= scale
        total += np.float32((gain_db - _DB_LOW) * 255.0 / _DB_RANGE)
        np.clip(total, 0.0, 255.0, out=total)
        fan.to_frame(total.astype(np.uint8), out)


def _draw_mask(fan: _Fan, out: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float,
               label: int) -> None:
    import cv2

    shift = 4
    k = 1 << shift
    cv2.ellipse(out, (int(round(cx * k)), int(round(cy * k))), (int(round(a * k)), int(round(b * k))),
                math.degrees(angle), 0, 360, int(label), thickness=-1, lineType=cv2.LINE_8, shift=shift)
    np.multiply(out, fan.fov_u8, out=out)


def _sweep_kinds(n_sweeps: int) -> list[str]:
    if n_sweeps == 6:
        return ["transverse"] * 3 + ["sagittal"] * 3
    n_t = (n_sweeps + 1) // 2
    return ["transverse"] * n_t + ["sagittal"] * (n_sweeps - n_t)


def synthesize_case(seed: int, n_sweeps: int = DEFAULT_SWEEPS, frames_per_sweep: int = DEFAULT_FRAMES_PER_SWEEP,
                    height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH, *, kind: str | None = None,
                    spacing_mm: float = DEFAULT_SPACING_MM) -> SynthCase:
    """Make one case. ``kind`` forces "optimal" (abdomen with label-1 frames), "suboptimal"
    (abdomen, label 2 only) or "none" (no abdomen); by default about 60/25/15 %.

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
    fan = _Fan(height, width)
    r = _CaseRenderer(np.random.default_rng(noise_seq), fan)
    s = fan.s
    fps = frames_per_sweep
    n = n_sweeps * fps
    kinds = _sweep_kinds(n_sweeps)
    ranges = [(i * fps, (i + 1) * fps) for i in range(n_sweeps)]
    frames = np.empty((n, height, width), dtype=np.uint8)
    mask = np.zeros((n, height, width), dtype=np.uint8)

    roll = rng.random()
    if kind is None:
        kind = "optimal" if roll < 0.6 else "suboptimal" if roll < 0.85 else "none"
    transverse = [i for i, k in enumerate(kinds) if k == "transverse"]
    if kind != "none" and not transverse:
        kind = "none"
    abdomen_sweeps: list[int] = []
    if kind != "none":
        n_abd = 2 if (len(transverse) > 1 and rng.random() < 0.35) else 1
        abdomen_sweeps = sorted(int(v) for v in rng.choice(transverse, size=n_abd, replace=False))

    # Case-level anatomy (reference px = 0.28 mm at full size).
    wall = {"fat": rng.uniform(12, 55), "muscle": rng.uniform(12, 30), "myo": rng.uniform(12, 35)}
    wall_depth = 4.0 + wall["fat"] + wall["muscle"] + wall["myo"]
    ac_target = rng.uniform(150.0, 350.0)                 # mm, at full size
    ratio = rng.uniform(0.8, 0.95)
    a_ref = ac_target / DEFAULT_SPACING_MM / ramanujan_circumference(1.0, ratio)
    case_bright = rng.normal(0.0, 1.5)
    case_gain = rng.normal(0.0, 1.5)

    ac_mm: list[float | None] = [None] * n_sweeps
    sweep_optimal = {}
    for j, sw in enumerate(abdomen_sweeps):
        sweep_optimal[sw] = kind == "optimal" and (j == 0 or rng.random() < 0.6)

    for sw in range(n_sweeps):
        start = sw * fps
        bg = r.background(rng, wall, cavity_bottom=rng.uniform(330, 500))
        tracks: list = []
        # Fetus in this sweep.
        if sw in abdomen_sweeps:
            track = _make_body_track(rng, fan, fps, a_ref * s * rng.uniform(0.97, 1.03), ratio, wall_depth,
                                     optimal=sweep_optimal[sw], brightness=case_bright)
            tracks.append(track)
            if track.optimal:
                ac_mm[sw] = round(ramanujan_circumference(track.a, track.b) * spacing_mm, 2)
        elif kinds[sw] == "transverse":
            _add_transverse_distractors(rng, fan, fps, tracks, a_ref * s, wall_depth, case_bright)
        else:
            if rng.random() < 0.75:
                tracks.append(_make_sagittal(rng, fan, fps, a_ref * s, wall_depth, case_bright))
            if rng.random() < 0.4:
                tracks.append(_make_blob(rng, fan, fps, a_ref * s, wall_depth, case_bright, "limb"))
        # Gain events: probe lifting at the start/end, lateral contact loss.
        fade_in = int(rng.integers(0, max(2, fps // 20))) if rng.random() < 0.5 else 0
        fade_out = int(rng.integers(0, max(2, fps // 20))) if rng.random() < 0.5 else 0
        contact = None
        if rng.random() < 0.4:
            side = rng.choice([-1.0, 1.0])
            edge = side * rng.uniform(0.1, 0.45)
            steep = 1.0 / rng.uniform(0.02, 0.06)
            contact = (-rng.uniform(12, 30) / (1.0 + np.exp(-(fan.theta - edge) * side * steep))).astype(np.float32)
            c0 = int(rng.integers(0, fps))
            c1 = int(min(fps, c0 + rng.integers(fps // 6 + 1, fps // 2 + 2)))
        tex_y = rng.uniform(0, r.tpad - 1)
        tex_x = rng.uniform(0, r.tpad - 1)
        tex_vy, tex_vx = rng.normal(0, 0.25), rng.normal(0, 0.4)
        for f in range(fps):
            i = start + f
            prims: list[_Ellipse] = []
            for t in tracks:
                prims += t.prims(f)
            gain = case_gain
            if fade_in and f < fade_in:
                gain -= 30.0 * (1.0 - f / fade_in)
            if fade_out and f >= fps - fade_out:
                gain -= 30.0 * (1.0 - (fps - 1 - f) / fade_out)
            col = contact if (contact is not None and c0 <= f < c1) else None
            oy = int(np.clip(tex_y + tex_vy * f, 0, r.tpad - 1))
            ox = int(np.clip(tex_x + tex_vx * f, 0, r.tpad - 1))
            r.render_frame(bg, f, (oy, ox), prims, gain, col, frames[i])
            for t in tracks:
                if isinstance(t, _BodyTrack):
                    lab = t.label(f)
                    if lab:
                        cx, cy, ang = t.pose(f)
                        a, b = t.axes(f)
                        _draw_mask(fan, mask[i], cx, cy, a, b, ang, lab)

    return SynthCase(frames=frames, mask=mask, ac_mm=ac_mm, spacing_mm=(spacing_mm, spacing_mm),
                     sweep_ranges=ranges, sweep_kinds=kinds, seed=int(seed), uuid=case_uuid(seed),
                     kind=kind, abdomen_sweeps=abdomen_sweeps)


def _make_body_track(rng: np.random.Generator, fan: _Fan, fps: int, a: float, ratio: float,
                     wall_depth: float, optimal: bool, brightness: float) -> _BodyTrack:
    half = max(2.0, rng.uniform(9.0, 20.0) * fps / 140.0)
    u1 = rng.uniform(0.25, 0.45)
    lo = half + 1
    hi = fps - 2 - half
    centre = float(rng.uniform(lo, hi)) if hi > lo else (fps - 1) / 2.0
    centre = float(round(centre))
    spin = math.radians(rng.normal(0.0, 0.3))
    vx, vy = rng.normal(0.0, 0.7) * fan.s, rng.normal(0.0, 0.4) * fan.s
    angle = rng.uniform(-0.5, 0.5) + (math.pi / 2 if rng.random() < 0.3 else 0.0)
    b = a * ratio
    n_opt = int(math.floor(u1 * half + 1e-9))
    for attempt in range(400):
        if attempt and attempt % 40 == 0:
            a *= 0.95
            b *= 0.95
        depth = rng.uniform(wall_depth * fan.s + b * 0.9, 520 * fan.s) / fan.s
        theta = rng.uniform(-0.35, 0.35)
        cx, cy = fan.frame_point(depth, theta)
        ok = True
        for df in range(-n_opt, n_opt + 1):
            if not fan.ellipse_inside(cx + vx * df, cy + vy * df, a, b, angle + spin * df):
                ok = False
                break
        if ok:
            break
    return _BodyTrack(centre=centre, half=half, u1=u1, cx=cx, cy=cy, vx=vx, vy=vy, a=a, b=b, angle=angle,
                      spin=spin, spine_at=rng.uniform(0, 2 * math.pi), stomach_side=rng.choice([-1.0, 1.0]),
                      optimal=optimal, head=rng.random() < 0.5, brightness=brightness + rng.normal(0, 0.7))


def _random_centre(rng: np.random.Generator, fan: _Fan, wall_depth: float, size: float) -> tuple[float, float]:
    depth = rng.uniform(wall_depth + size / fan.s * 0.6, 480)
    return fan.frame_point(depth, rng.uniform(-0.4, 0.4))


def _make_sagittal(rng: np.random.Generator, fan: _Fan, fps: int, a: float, wall_depth: float,
                   brightness: float) -> _Sagittal:
    half = max(2.0, rng.uniform(12.0, 28.0) * fps / 140.0)
    centre = rng.uniform(0, fps)
    b = a * rng.uniform(0.7, 0.85)
    cx, cy = _random_centre(rng, fan, wall_depth, b)
    return _Sagittal(centre=centre, half=half, cx=cx, cy=cy, a=a * rng.uniform(1.9, 2.5), b=b,
                     angle=rng.uniform(-0.35, 0.35) + (math.pi if rng.random() < 0.5 else 0.0),
                     vx=rng.normal(0, 0.6) * fan.s, vy=rng.normal(0, 0.4) * fan.s,
                     spine_side=rng.choice([-1.0, 1.0]), brightness=brightness)


def _make_blob(rng: np.random.Generator, fan: _Fan, fps: int, a: float, wall_depth: float,
               brightness: float, kind: str) -> _Blob:
    if kind == "head":
        half = max(2.0, rng.uniform(8.0, 16.0) * fps / 140.0)
        size = a * rng.uniform(0.85, 1.0)
        bb = size * rng.uniform(0.8, 0.9)
    else:
        half = max(1.5, rng.uniform(4.0, 12.0) * fps / 140.0)
        size = a * rng.uniform(0.2, 0.32)
        bb = size * rng.uniform(0.75, 0.95)
    cx, cy = _random_centre(rng, fan, wall_depth, bb)
    return _Blob(centre=rng.uniform(0, fps), half=half, cx=cx, cy=cy, a=size, b=bb,
                 angle=rng.uniform(0, math.pi), vx=rng.normal(0, 0.6) * fan.s, vy=rng.normal(0, 0.4) * fan.s,
                 kind=kind, brightness=brightness)


def _add_transverse_distractors(rng: np.random.Generator, fan: _Fan, fps: int, tracks: list, a: float,
                                wall_depth: float, brightness: float) -> None:
    """Unlabelled fetal parts in a transverse sweep without the abdominal plane."""
    if rng.random() < 0.35:
        tracks.append(_make_blob(rng, fan, fps, a, wall_depth, brightness, "head"))
    for _ in range(int(rng.integers(0, 3))):
        tracks.append(_make_blob(rng, fan, fps, a, wall_depth, brightness, "limb"))
    if rng.random() < 0.3:
        # The trunk passes only at thorax level (ribs, heart), no abdomen: unlabelled.
        t = _make_body_track(rng, fan, fps, a * 0.95, rng.uniform(0.8, 0.95), wall_depth, optimal=False,
                             brightness=brightness)
        t.u_min = 1.05          # nothing below the thorax is drawn
        t.optimal = True        # full-shape (not oblique) section
        t.labelled = False
        t.centre -= 1.6 * t.half
        tracks.append(t)


# --------------------------------------------------------------------------------------------
# Writing datasets and the demo sweep


@dataclass(frozen=True)
class CaseSummary:
    """What ``write_dataset`` reports per case (the volumes themselves stay on disk)."""

    index: int
    uuid: str
    kind: str
    ac_mm: list[float | None]
    abdomen_sweeps: list[int]


def write_case(case: SynthCase, image_path: Path, mask_path: Path, compress_images: bool = True) -> None:
    """Write a case's image and mask volumes. Images are compressed with zlib level 1 (twice as
    fast as the default level, files ~25 % larger); masks are always compressed."""
    from fetaliqa_core.io import write_volume

    write_volume(mask_path, case.mask, case.spacing_mm, compress=True,
                 sweep_ranges=case.sweep_ranges, sweep_kinds=case.sweep_kinds)
    write_volume(image_path, case.frames, case.spacing_mm, compress=compress_images,
                 sweep_ranges=case.sweep_ranges, sweep_kinds=case.sweep_kinds, compression_level=1)


def _make_and_write(index: int, seed: int, n_sweeps: int, frames_per_sweep: int, height: int, width: int,
                    compress: bool, img_dir: Path, mask_dir: Path) -> CaseSummary:
    case = synthesize_case(case_seed(seed, index), n_sweeps=n_sweeps, frames_per_sweep=frames_per_sweep,
                           height=height, width=width)
    write_case(case, img_dir / f"{case.uuid}.mha", mask_dir / f"{case.uuid}.mha", compress_images=compress)
    return CaseSummary(index=index, uuid=case.uuid, kind=case.kind, ac_mm=list(case.ac_mm),
                       abdomen_sweeps=list(case.abdomen_sweeps))


def write_dataset(out_dir: str | Path, cases: int, seed: int, n_sweeps: int = DEFAULT_SWEEPS,
                  frames_per_sweep: int = DEFAULT_FRAMES_PER_SWEEP, height: int = DEFAULT_HEIGHT,
                  width: int = DEFAULT_WIDTH, compress: bool = True, overwrite: bool = False,
                  jobs: int = 1, progress: Callable[[int, int, CaseSummary], None] | None = None) -> list[str]:
    """Write ``cases`` synthetic cases in the ACOUSLIC-AI layout under ``out_dir``::

        images/stacked_fetal_ultrasound/<uuid>.mha
        masks/stacked_fetal_abdomen/<uuid>.mha
        circumferences/fetal_abdominal_circumferences_per_sweep.csv

    Case ``i`` depends only on ``seed`` and ``i`` (not on ``jobs``, the number of worker
    processes). Returns the case uuids in order. ``progress(done, cases, summary)`` is called
    after each case.
    """
    out = Path(out_dir)
    if cases < 1:
        raise FetalIQAError(f"--cases {cases}: give at least 1 case.")
    img_dir, mask_dir, csv_path = out / acouslic.IMAGES_SUBDIR, out / acouslic.MASKS_SUBDIR, out / acouslic.CSV_RELPATH
    if not overwrite and (csv_path.exists() or (img_dir.is_dir() and any(img_dir.glob("*.mha")))):
        raise FetalIQAError(f"{out}: already holds a dataset. Choose an empty folder, or overwrite it "
                            "explicitly (--overwrite).")
    try:
        for d in (img_dir, mask_dir, csv_path.parent):
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetalIQAError(f"{out}: cannot create the dataset folders ({exc.strerror}). Choose a folder "
                            "you can write to.") from None
    args = (seed, n_sweeps, frames_per_sweep, height, width, compress, img_dir, mask_dir)
    summaries: list[CaseSummary] = []
    if jobs <= 1 or cases == 1:
        for i in range(cases):
            summaries.append(_make_and_write(i, *args))
            if progress is not None:
                progress(len(summaries), cases, summaries[-1])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, cases), mp_context=ctx) as pool:
            futures = [pool.submit(_make_and_write, i, *args) for i in range(cases)]
            for fut in as_completed(futures):
                summaries.append(fut.result())
                if progress is not None:
                    progress(len(summaries), cases, summaries[-1])
        summaries.sort(key=lambda s: s.index)
    header = ["uuid", "subject_id"] + [f"sweep_{k + 1}_ac_mm" for k in range(n_sweeps)]
    tmp = csv_path.parent / f".{csv_path.name}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for s in summaries:
            w.writerow([s.uuid, str(s.index + 1)] + ["" if v is None else f"{v:.2f}" for v in s.ac_mm])
    os.replace(tmp, csv_path)
    return [s.uuid for s in summaries]


def demo_case_paths() -> tuple[Path, Path]:
    """(sweep, mask) paths of the demo case in the user cache, synthesised on first use.

    The sweep is written uncompressed so that it opens memory-mapped; both files appear
    atomically (temporary file, then rename)."""
    from fetaliqa_core import paths

    folder = paths.cache_dir() / "demo"
    stem = f"demo_s{DEMO_SEED}_v{SYNTH_VERSION}"
    sweep_path, mask_path = folder / f"{stem}.mha", folder / f"{stem}_mask.mha"
    if sweep_path.is_file() and mask_path.is_file():
        return sweep_path, mask_path
    case = synthesize_case(DEMO_SEED)
    write_case(case, sweep_path, mask_path, compress_images=False)
    return sweep_path, mask_path


def demo_sweep_path() -> Path:
    """Path of the demo sweep (840 frames, 562 x 744), synthesised into the cache on first use."""
    return demo_case_paths()[0]
