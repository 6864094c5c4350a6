"""Rendering of a synthetic frame: maternal tissue layers, speckle, attenuation, time-gain
compensation, gain events, acoustic shadows, log compression to 8 bit, scan conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fetaliqa_core.synth.anatomy import ATT_FLUID, ATT_TISSUE, Ellipse, paint
from fetaliqa_core.synth.fan import Fan

# Display: grey = (dB - _DB_LOW) * 255 / range (the range varies per case around _DB_RANGE)
_DB_LOW = -30.0
_DB_RANGE = 62.0
_NOISE_DB = -31.0
_TGC = 0.032


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
    ("skin", 5.0, 1.0, 0.0, ATT_TISSUE),
    ("fat", -13.0, 1.5, 11.0, ATT_TISSUE * 0.8),
    ("muscle", -5.0, 2.0, 5.0, ATT_TISSUE),
    ("fascia", 7.0, 1.0, 0.0, ATT_TISSUE),
    ("myometrium", -7.0, 2.0, 2.0, ATT_TISSUE),
    ("uterine_wall", 3.0, 1.0, 0.0, ATT_TISSUE),
    ("placenta_anterior", -3.0, 2.5, 0.0, ATT_TISSUE),
    ("fluid", -45.0, 0.0, 0.0, ATT_FLUID),
    ("uterine_wall_posterior", 4.0, 1.0, 0.0, ATT_TISSUE),
    ("placenta_posterior", -3.0, 2.5, 0.0, ATT_TISSUE),
    ("deep", -10.0, 2.5, 3.0, ATT_TISSUE),
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


@dataclass
class Shadow:
    """An acoustic shadow (gas, bone out of plane, poor contact): scan lines ``theta`` +- ``half``
    (radians) darkened by ``db`` below ``depth`` (reference px below the skin)."""

    theta: float
    half: float
    depth: float
    db: float


class CaseRenderer:
    """Renders the frames of one case; ``speckle_scale`` and ``db_range`` (display dynamic range)
    vary the look from case to case."""

    def __init__(self, rng: np.random.Generator, fan: Fan, speckle_scale: float = 1.0,
                 db_range: float = _DB_RANGE) -> None:
        self.rng = rng
        self.fan = fan
        self.db_range = float(db_range)
        pad = 24
        self.pad = pad
        shape = (fan.n_r + pad, fan.n_t + pad)
        gs = fan.s * speckle_scale  # grid scale (speckle keeps its size in pixels)
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
                     prims: list[Ellipse], gain_db: float, col_gain: np.ndarray | None,
                     out: np.ndarray, shadows: list[Shadow] = ()) -> None:
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
            paint(fan, echo, att, tex, p)
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
        for sh in shadows:
            cols = np.clip(1.0 - np.abs(fan.theta - np.float32(sh.theta)) / np.float32(sh.half), 0.0, 1.0)
            j = np.nonzero(cols)[0]
            if j.size:
                rows = np.clip((fan.depth - np.float32(sh.depth)) / 6.0, 0.0, 1.0)
                total[:, j[0]:j[-1] + 1] -= np.float32(sh.db) * rows[:, None] * np.sqrt(cols[j[0]:j[-1] + 1])[None, :]
        floor = self.tmp2
        np.multiply(spk, np.float32(0.6), out=floor)
        floor += self.floor
        np.maximum(total, floor, out=total)
        # grey = (dB + gain - low) * 255 / range
        scale = np.float32(255.0 / self.db_range)
        total *= scale
        total += np.float32((gain_db - _DB_LOW) * 255.0 / self.db_range)
        np.clip(total, 0.0, 255.0, out=total)
        fan.to_frame(total.astype(np.uint8), out)


def draw_mask(fan: Fan, out: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float,
               label: int) -> None:
    import cv2

    shift = 4
    k = 1 << shift
    cv2.ellipse(out, (int(round(cx * k)), int(round(cy * k))), (int(round(a * k)), int(round(b * k))),
                math.degrees(angle), 0, 360, int(label), thickness=-1, lineType=cv2.LINE_8, shift=shift)
    np.multiply(out, fan.fov_u8, out=out)

