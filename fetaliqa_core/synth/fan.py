"""Fan geometry of a synthetic sweep: the polar (depth x scan line) grid a scanner samples and its
scan conversion onto frames.

The default fan is the ACOUSLIC-AI probe's (measured on ``resources/acouslic_fov_mask.mha``,
562 x 744 pixels: apex above the image, inner radius at the probe face, outer radius, half
opening angle); the field of view is then that mask itself. :func:`random_geometry` draws other
curved-array fans (opening angle, probe-face radius, depth), whose field of view is computed
from the geometry, so that models trained on the sweeps do not learn one fan's outline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fetaliqa_core import acouslic

# Reference frame: ACOUSLIC-AI, 562 x 744 pixels of 0.28 mm.
REF_H, REF_W = acouslic.FRAME_SHAPE

# Polar grid at full size: samples along depth, scan lines; upsampling before scan conversion.
_POLAR_ROWS = 320
_POLAR_LINES = 224
_UPSAMPLE = 2


@dataclass(frozen=True)
class FanGeometry:
    """A curved-array fan in reference pixels (0.28 mm): apex position, probe-face and deepest
    radius, half opening angle (radians). ``acouslic`` marks the challenge's own fan, whose field
    of view is read from its mask rather than computed."""

    apex_y: float = -183.83
    apex_x: float = 372.0
    r_in: float = 212.3
    r_out: float = 746.3
    half_angle: float = math.radians(29.885)
    acouslic: bool = True

    @property
    def depth_range(self) -> float:
        """Reference px from the probe face to the deepest sample."""
        return self.r_out - self.r_in


ACOUSLIC_FAN = FanGeometry()


def random_geometry(rng: np.random.Generator) -> FanGeometry:
    """Another plausible curved-array fan on the same 562 x 744 frame: opening 40-76 degrees,
    probe face 10-60 px below the top edge with a radius of 90-320 px, imaging depth 60-100 %
    of the frame height."""
    half = math.radians(rng.uniform(20.0, 38.0))
    r_in = rng.uniform(90.0, 320.0)
    top = rng.uniform(10.0, 60.0)
    apex_y = top - r_in
    bottom = rng.uniform(0.6, 1.0) * (REF_H - top) + top
    r_out = bottom - apex_y
    return FanGeometry(apex_y=apex_y, apex_x=REF_W / 2.0 + rng.uniform(-15.0, 15.0), r_in=r_in, r_out=r_out,
                       half_angle=half, acouslic=False)


class Fan:
    """Polar (depth x scan line) grid and its scan conversion onto frames of ``height x width``."""

    def __init__(self, height: int, width: int, geometry: FanGeometry = ACOUSLIC_FAN) -> None:
        import cv2

        g = geometry
        self.g = g
        self.h, self.w = height, width
        self.sy, self.sx = height / REF_H, width / REF_W
        self.s = min(self.sy, self.sx)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        yr = yy / self.sy - np.float32(g.apex_y)
        xr = xx / self.sx - np.float32(g.apex_x)
        rr = np.hypot(yr, xr)
        tt = np.arctan2(xr, yr)
        if g.acouslic:
            fov = acouslic.fov_mask((height, width))
        else:
            fov = (rr >= g.r_in) & (rr <= g.r_out) & (np.abs(tt) <= g.half_angle)
        self.fov = np.ascontiguousarray(fov)
        self.fov_u8 = self.fov.astype(np.uint8)
        # Polar grid, slightly larger than the fan; the field of view cuts the exact shape. Its
        # resolution follows the ACOUSLIC fan's (same sample spacing along depth and angle).
        self.n_r = max(32, int(round(_POLAR_ROWS * self.s * (g.depth_range / ACOUSLIC_FAN.depth_range))))
        self.n_t = max(32, int(round(_POLAR_LINES * self.s * (g.half_angle / ACOUSLIC_FAN.half_angle))))
        self.r0, self.r1 = g.r_in - 3.0, g.r_out + 3.0
        self.t0, self.t1 = -g.half_angle - 0.02, g.half_angle + 0.02
        self.dr = (self.r1 - self.r0) / (self.n_r - 1)          # reference px per row
        self.dt = (self.t1 - self.t0) / (self.n_t - 1)          # radians per column
        r = (self.r0 + self.dr * np.arange(self.n_r)).astype(np.float32)
        t = (self.t0 + self.dt * np.arange(self.n_t)).astype(np.float32)
        self.depth = r - np.float32(g.r_in)                      # (n_r,) reference px below skin
        self.theta = t
        # Frame-pixel coordinates of each polar sample.
        self.YT = ((g.apex_y + r[:, None] * np.cos(t)[None, :]) * self.sy).astype(np.float32)
        self.XT = ((g.apex_x + r[:, None] * np.sin(t)[None, :]) * self.sx).astype(np.float32)
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
        g = self.g
        r = g.r_in + depth_ref
        return ((g.apex_x + r * math.sin(theta)) * self.sx, (g.apex_y + r * math.cos(theta)) * self.sy)

    def polar_of(self, x: float, y: float) -> tuple[float, float]:
        """(radius in reference px, angle) of frame pixel (x, y)."""
        xr, yr = x / self.sx - self.g.apex_x, y / self.sy - self.g.apex_y
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
