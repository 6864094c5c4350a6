"""Fetal structures of a synthetic sweep, as ellipses painted into the polar echo and
attenuation maps: the trunk crossing a transverse plane (pelvis -> abdomen -> thorax -> head),
the head (skull ring, midline echo), the body cut lengthwise, limbs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fetaliqa_core.synth.fan import Fan

# Attenuation in dB per reference pixel (0.28 mm), round trip.
ATT_TISSUE = 0.05
ATT_FLUID = 0.004
ATT_BONE = 1.2


@dataclass
class Ellipse:
    """A filled ellipse painted into the polar echo/attenuation maps (frame px, radians)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    echo: float                    # dB
    att: float = ATT_TISSUE       # dB per reference px
    tex: float = 0.0               # gain of the texture field inside
    rim_echo: float | None = None  # bright rim (skin, skull)
    rim_width: float = 0.08        # fraction of the radius
    rim_att: float = ATT_TISSUE
    edge: float = 1.2              # soft edge, frame px


def paint(fan: Fan, echo: np.ndarray, att: np.ndarray, tex: np.ndarray, p: Ellipse) -> None:
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
class BodyTrack:
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
    gaps: frozenset = field(default_factory=frozenset)  # frames where the fetus moved out of plane
    gap_u: float = 1.4             # the level shown in those frames (thorax)

    def u(self, f: int) -> float:
        if f in self.gaps:
            return self.gap_u
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

    def prims(self, f: int) -> list[Ellipse]:
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
        out.append(Ellipse(x, y, 0.13 * a, 0.1 * a, ang + sp + math.pi / 2, echo=4.0, att=ATT_BONE * 0.25,
                            edge=2.0))
        for along, across, k in ((0.74, 0.0, 1.0), (0.86, 0.09, 0.75), (0.86, -0.09, 0.75)):
            x, y = _local(cx, cy, ang, a, b, along * su - across * sv, along * sv + across * su)
            out.append(Ellipse(x, y, r_dot * k * 1.25, r_dot * k, ang + sp, echo=28.0, att=ATT_BONE, edge=0.8))
        side = self.stomach_side
        if u < -1.0:  # pelvis: iliac wings, bright lines
            for sgn in (-1.0, 1.0):
                x, y = _local(cx, cy, ang, a, b, 0.35 * su + sgn * 0.45 * (-sv), 0.35 * sv + sgn * 0.45 * su)
                out.append(Ellipse(x, y, 0.28 * a, 0.04 * a + 0.6, ang + sp + sgn * 0.9, echo=13.0,
                                    att=ATT_BONE * 0.5, edge=0.8))
        # Stomach: dark fluid bubble on the side opposite the spine (abdomen only).
        if self.optimal and abs(u) <= 0.6:
            st = math.sqrt(max(0.0, 1.0 - (u / 0.6) ** 2))
            x, y = _local(cx, cy, ang, a, b, -0.25 * su + side * 0.35 * (-sv), -0.25 * sv + side * 0.35 * su)
            out.append(Ellipse(x, y, 0.24 * a * st, 0.15 * a * st, ang + sp + 0.4 * side,
                                echo=-38.0, att=ATT_FLUID))
        # Umbilical vein: short dark curve in the anterior third (the optimal level).
        if self.optimal and abs(u) <= self.u1:
            # a short "J": from the anterior wall towards the centre, bending to the stomach side
            for t in np.linspace(0.0, 1.0, 7):
                along = -0.66 + 0.42 * t
                across = -side * 0.22 * t * t
                x, y = _local(cx, cy, ang, a, b, along * su - across * sv, along * sv + across * su)
                out.append(Ellipse(x, y, 0.06 * a, 0.06 * a, 0.0, echo=-30.0, att=ATT_FLUID, edge=1.0))
        # Ribs (thorax, beyond the labelled abdomen): short bright arcs at the sides, with shadows.
        # The thorax starts where the annotation ends (|u| = 1) so that a frame's label can be read
        # from the frame itself.
        if u > 1.0:
            for sgn in (-1.0, 1.0):
                ra = sp + sgn * 1.35
                x, y = _local(cx, cy, ang, a, b, 0.86 * math.cos(ra), 0.86 * math.sin(ra))
                out.append(Ellipse(x, y, 0.13 * a, 0.035 * a + 0.5, ang + ra + math.pi / 2, echo=13.0,
                                    att=ATT_BONE * 0.6, edge=0.8))
        # Heart (thorax): four dark chambers with a bright cross.
        if u > 1.0 and u < 2.1:
            hx, hy = _local(cx, cy, ang, a, b, -0.3 * su, -0.3 * sv)
            out.append(Ellipse(hx, hy, 0.36 * a, 0.3 * a, ang + sp, echo=0.0 + br, tex=1.0))
            for du, dv in ((-0.1, -0.09), (0.1, -0.09), (-0.1, 0.09), (0.1, 0.09)):
                x, y = _local(cx, cy, ang, a, b, -0.3 * su + du, -0.3 * sv + dv)
                out.append(Ellipse(x, y, 0.08 * a, 0.07 * a, ang, echo=-34.0, att=ATT_FLUID))
        return out


def _trunk_prims(cx: float, cy: float, a: float, b: float, ang: float, br: float) -> list[Ellipse]:
    """Fetal trunk cross-section: bright skin, thin dark subcutaneous layer, textured inside."""
    return [
        Ellipse(cx, cy, a, b, ang, echo=8.0 + br, tex=1.0),
        Ellipse(cx, cy, a - 2.2 * max(a / 100, 0.4), b - 2.2 * max(a / 100, 0.4), ang, echo=-13.0 + br, tex=1.0),
        Ellipse(cx, cy, a * 0.93, b * 0.93, ang, echo=-6.0 + br, tex=2.5, edge=2.5),
    ]


def _head_prims(cx: float, cy: float, a: float, b: float, ang: float, br: float) -> list[Ellipse]:
    if a < 1.5:
        return []
    out = [Ellipse(cx, cy, a, b, ang, echo=-13.0 + br, tex=1.0, rim_echo=24.0, rim_width=0.09,
                    rim_att=ATT_BONE * 0.35)]
    # Midline echo (falx) and two faint thalamic shadows.
    out.append(Ellipse(cx, cy, a * 0.8, max(0.012 * a, 0.6), ang, echo=6.0))
    for sgn in (-1.0, 1.0):
        x, y = _local(cx, cy, ang, a, b, 0.0, sgn * 0.22)
        out.append(Ellipse(x, y, 0.2 * a, 0.12 * a, ang, echo=-20.0, att=ATT_FLUID))
    return out


@dataclass
class _Passing:
    """A section that appears, grows and fades over ``centre +- half`` frames while drifting by
    ``(vx, vy)`` px per frame; ``at(f)`` gives ``(scale 0..1, cx, cy)`` there, or None outside."""

    centre: float
    half: float
    cx: float
    cy: float
    a: float
    b: float
    angle: float
    vx: float
    vy: float

    def at(self, f: int) -> tuple[float, float, float] | None:
        u = (f - self.centre) / self.half
        if abs(u) >= 1.0:
            return None
        df = f - self.centre
        return math.sqrt(1.0 - u * u), self.cx + self.vx * df, self.cy + self.vy * df


@dataclass
class Sagittal(_Passing):
    """The fetus cut lengthwise: an elongated trunk with a row of vertebrae and the head."""

    spine_side: float
    brightness: float

    def prims(self, f: int) -> list[Ellipse]:
        here = self.at(f)
        if here is None:
            return []
        sc, cx, cy = here
        u = (f - self.centre) / self.half
        ang = self.angle
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
                out.append(Ellipse(x, y, r_dot, r_dot * 0.8, ang, echo=15.0, att=ATT_BONE, edge=0.8))
        if abs(u) < 0.8:
            x, y = _local(cx, cy, ang, a, b, 0.05, -self.spine_side * 0.2)
            out.append(Ellipse(x, y, 0.14 * a * sc, 0.3 * b, ang, echo=-36.0, att=ATT_FLUID))
            x, y = _local(cx, cy, ang, a, b, 0.55, -self.spine_side * 0.1)
            out.append(Ellipse(x, y, 0.15 * a, 0.35 * b, ang, echo=-2.0 + br, tex=1.0))
        return out


@dataclass
class Blob(_Passing):
    """A small transverse limb section (or a head) passing through a run of frames."""

    kind: str                      # "limb" | "head"
    brightness: float

    def prims(self, f: int) -> list[Ellipse]:
        here = self.at(f)
        if here is None:
            return []
        sc, cx, cy = here
        if self.kind == "head":
            return _head_prims(cx, cy, self.a * sc, self.b * sc, self.angle, self.brightness)
        a, b = self.a * (0.6 + 0.4 * sc), self.b * (0.6 + 0.4 * sc)
        out = [Ellipse(cx, cy, a, b, self.angle, echo=-4.0 + self.brightness, tex=1.5, rim_echo=4.0)]
        out.append(Ellipse(cx + 0.1 * a, cy - 0.1 * b, 0.28 * a, 0.25 * b, self.angle, echo=16.0,
                            att=ATT_BONE, edge=0.8))
        return out


