"""Which frame of a case to measure on: a sweep-first choice that uses everything the models give.

The algorithm (documented with its measured effect in docs/FRAME_CHOICE.md):

1. **Mask plausibility** (segmenter). On each frame's mask (any abdomen label) inside the field
   of view, the largest connected piece is fitted with an ellipse (``cv2.fitEllipse`` on its
   outline, leaving out the outline along the fan's edge, as the AC measurement does). The mask is a
   *plausible abdomen* when

   - it is one closed, ellipse-like shape: the piece holds >= 70 % of the mask, and its overlap
     with the fitted ellipse (both clipped to the field of view, so a fan-cut abdomen is not
     punished) has IoU >= 0.75 (the fit's residual);
   - its size is plausible: the ellipse's circumference lies in
     :data:`~fetaliqa_core.analysis.units.AC_PLAUSIBLE_MM` when the pixel spacing is known,
     else its area is 1-50 % of the field of view;
   - it lies in the fan: >= 60 % of the fitted ellipse is inside the field of view;
   - it is not elongated: minor / major axis >= 0.5 (a transverse abdomen is nearly round; a
     lengthwise body or a limb is not); an *oval* one (below :data:`ROUND_RATIO`, 0.7) is cut
     obliquely: it may be chosen after the rounder frames of its run, its AC is doubtful;
   - with the frame's grey levels: its outline is not a skull's. Bone is the brightest echo in a
     fetal scan and the brain inside the skull among the darkest, while the abdominal wall is a
     thin line about as bright as the echoes of the liver inside it. At 72 angles around the
     fitted ellipse, the brightest grey level of a band from 0.8 to 1.25 of its size (the bone may
     lie just outside a mask of the brain) and of a band from 0.4 to 0.7 inside; the median of the
     first over the median of the second is the *rim ratio* (:func:`rim_ratio`). At
     :data:`SKULL_RIM_RATIO` or above (or, at a high display gain, which adds to every grey level
     and lowers the ratio, :data:`SKULL_LEAD` grey levels ahead at :data:`SKULL_LEAD_RATIO`), the
     mask outlines a bright ring around a darker inside, as a head's does, and is not an
     abdomen; so is a thin ring (~2 px wide, lost to the light smoothing and the samples' steps)
     read a second time, less smoothed and sampled 1 px apart, at :data:`SKULL_FINE_RATIO` or
     above. Below :data:`FLUID_RIM_RATIO` the band 0.8-1.1 around the outline holds nothing as
     bright as the body's inside: the outline runs through the fluid around the body, not along
     its edge (a mask much larger than the body it covers), and an AC measured on it would be too
     long. And an abdomen's outline is an interface: along at least a
     quarter of it the mean grey just inside differs from that just outside by
     :data:`MIN_EDGE_CONTRAST` of their level (:func:`edge_contrast`), or a line on the outline
     is brighter than both sides (the skin's echo where little fluid lies around the body:
     :func:`ridge_contrast`); a mask drawn in a featureless stretch of fluid or tissue does not.

   Its quality ``q`` is that IoU (0 when not plausible). A plausible outline pinched in the
   middle (two wide notches facing each other across its centre, as where twins touch) may still
   be chosen, but the AC measured on it is doubtful.
2. **Per-frame evidence** ``v``: ``p_cls * q`` with both models, ``p_cls`` or ``q`` with one;
   smoothed along each sweep (NaN-aware moving average over 5 frames, never across sweeps).
3. **Positive frames**: every model that scored the frame calls it (``p_cls >=`` the threshold;
   the segmenter's own call, mask >= 1 % of the model input, on a plausible mask). Runs are
   maximal stretches of positive frames in a sweep, gaps of up to two frames closed.
4. **Sweep first**: the strongest run (sum of the smoothed evidence over its positive frames) is chosen;
   inside it, among its positive frames (never a closed gap), the frame with the best-fitting
   largest plausible ellipse (fitted area x IoU), frames the 3-class segmenter calls optimal
   (optimal share of the mask >= 0.5) first, then those that are not oval. Where
   the run has no plausible mask (no segmenter), the frame of highest evidence (ties: smoothed).
5. **Abstention**: no positive frame anywhere gives -1. When the models disagree everywhere
   (frames called by one model only), the same steps run on the frames that have a plausible
   mask (or, without a segmenter, a classifier call) and the answer says so
   (``basis``); with none of those either, -1. An AC measured on a frame the classifier does
   not call is shown as doubtful (:func:`~fetaliqa_core.analysis.units.classifier_doubt`).

Nothing here is fitted to a data set: the limits are anatomical (abdomen size and shape, the
skull's bright ring) or geometric (field of view), and the same on any fan, probe or generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from fetaliqa_core.analysis.ac import _border_zone, _fit, ramanujan_circumference
from fetaliqa_core.analysis.units import AC_PLAUSIBLE_MM, beside_threshold

MIN_PIECE_SHARE = 0.7
MIN_FIT_IOU = 0.75
MIN_IN_FAN = 0.6
#: At most this share of the fitted ellipse's outline may lie outside the field of view (or the
#: image): beyond it the AC is extrapolated from too short an arc (an egg-shaped abdomen with 40 %
#: of its area in an image corner read 16 % short, with 63 % of its fitted outline unseen; whole
#: synthetic abdomens with 43-45 % unseen still read within 0.2 %).
MAX_EXTRAPOLATED = 0.5
#: From this share of the outline outside the field of view on, the AC is doubtful unless the arc
#: that shows follows its fitted ellipse closely (:func:`arc_tolerance`), and from
#: :data:`EXTRAPOLATED_FAR` on whatever it follows: an ellipse fitted to a part of an outline that
#: is not exactly one's goes its own way where nothing shows, and the part that shows is fitted
#: well all the same (0.4-1.3 % rms). An independent generator's abdomens 2.1 % (rms, whole) off
#: their ellipse, cut by a fan's side, read +2.7 % with 25 % of the outline outside, +5.5 % with
#: 32 %, +10 % with 40 %; 1.2 % off, +2.4 % with 36 % and +4.4 % with 45 % (all plain, with a GA,
#: before); exact ellipses within 0.5 % at every cut (their arcs 0.2 % off at 124 px). Between the
#: two, a ripple along the edge (1 %, as a hand-drawn mask has) averages out and reads right: the
#: arc's tolerance lets it pass, an egg shape 1.5 % off its ellipse does not. Egg-shaped abdomens
#: cut by the image's edge read 3.0-3.2 % short, plain, with 18-20 % of their fitted outline outside
#: (another generator's; 24-25 % of the drawn outline): the first share is 15 %.
EXTRAPOLATED_DOUBT = 0.15
EXTRAPOLATED_FAR = 0.3
#: ... the arc's rms radial deviation from its ellipse allowed (a share of the radius), plus
#: :data:`ARC_PIXEL_TOLERANCE` pixels over the minor semi-axis for the outline's pixel steps
ARC_TOLERANCE = 0.008
ARC_PIXEL_TOLERANCE = 0.3
EXTRAPOLATED_REASON = ("extrapolated over {share:.0%} of it, which lies outside the field of view (or the image){why}: "
                       "the ellipse fitted to the arc that shows may go its own way there, so the AC may be off")
MIN_AXIS_RATIO = 0.5
#: A transverse section of the abdomen is nearly round (its two diameters within about 10-20 % of
#: each other); a section this much longer than wide (minor / major below it: 1.43 : 1) is cut
#: obliquely, or is no abdomen, and its circumference reads long: a round body cut at 45 degrees
#: gives 0.71 and +23 % (an independent generator's tilted sections: 30 degrees +8 %, 45 degrees
#: +23 %, 55 degrees +42 %, each read "ok" with a GA before). Such an outline may still be chosen,
#: after the rounder frames of its run, but the AC measured on it is doubtful.
ROUND_RATIO = 0.7
AREA_SHARE_OF_FOV = (0.01, 0.5)  # used only when the pixel spacing is unknown
#: The size check's allowance beyond :data:`AC_PLAUSIBLE_MM`: the mask judged here may be the
#: model's, coarser than the frame's on which the AC is measured (and then checked against the
#: range exactly, :func:`~fetaliqa_core.analysis.units.read_ac`); an abdomen measured 75.6 mm on
#: its frame was "implausible size" on its 224 x 224 mask, where ``ac`` read it plain.
SIZE_MARGIN = 0.03
SMOOTH_WINDOW = 5
OPTIMAL_SHARE = 0.5
#: Bone echoes far brighter than the brain inside the skull; the abdominal wall about as bright
#: as the liver inside it (docs/FRAME_CHOICE.md gives the values measured on both).
SKULL_RIM_RATIO = 1.4
#: ... and a skull at a high display gain: on a log-compressed display, gain adds to every grey
#: level (until white clips), so the ring's ratio over the brain falls (1.76 at one gain, 1.38 at
#: +8 dB, 1.21 at +14 dB on an independent generator's head) while its lead in grey levels stays.
#: A ring this many grey levels brighter than the inside, at this ratio or more, is a skull's too.
#: Measured on truth outlines (ratio, lead): heads of two independent generators at every gain,
#: 712 of 752 caught (674 by the ratio alone; the rest faint skulls); abdomens of four generators
#: (this project's held-out cases, three independent ones), 0 of 724: their lead is at most 23
#: grey levels, 33 for an abdomen packed in bright tissue (ratio 1.19).
SKULL_LEAD = 40.0
SKULL_LEAD_RATIO = 1.2
RIM_BAND = (0.8, 1.1)  # the band around the fitted ellipse searched for its outline's echo
#: The band searched for a skull: wider outwards, since a mask may cover the brain inside the bone
#: (the ring then lies at 1.0-1.2 of its ellipse). Measured on three independent generators' sweeps
#: (the demo models' masks plausible by shape): heads caught 77 % (62 % with RIM_BAND), abdomens
#: 0 of 90 (at most 1.09); the project's own annotated abdomens at most 1.19.
SKULL_BAND = (0.8, 1.25)
RIM_INNER = (0.4, 0.7)  # the band inside it, of the same width, it is compared with
#: A thin skull: a bone ring about 2 px wide (1 mm at 0.45 mm/px, as on a downsampled export) lost
#: most of its peak to the smoothing of one model pixel (~2 px on a 480-px frame) and fell between
#: the 11 samples across the skull's band (~4 px apart on a large head): 23 of 28 such heads of an
#: independent generator read a plain AC with a GA (ratio 1.22-1.39), while its rings of 2.6 px or
#: more were caught. The same bands are therefore read a second time, smoothed over
#: :data:`SKULL_FINE_SIGMA` px and sampled at most 1 px apart across, where those heads read
#: 1.56-1.89. Speckle's brightest samples rise there too, and a bright edge more (abdomens of four
#: independent generators read up to 1.49 where their ratio is below 1.4, one lobulated abdomen
#: with a shadow 1.59), so this reading counts as a skull's from :data:`SKULL_FINE_RATIO` on: at
#: 1.5 it caught all 28 thin skulls and called that whole abdomen a skull. Measured with ``ac`` on
#: the frames' own grey levels: thin rings caught 26 of 28 (5 before), thicker ones 285 of 285
#: (280); abdomens of four independent generators (1,584 frames) called skulls 29, as before.
SKULL_FINE_SIGMA = 1.0
SKULL_FINE_RATIO = 1.6
RIM_ANGLES = 72
MIN_RIM_ANGLES = 0.3  # share of the angles whose band lies in the image and the field of view
SKULL_REASON = "its outline is a bright ring around a darker inside, as a skull's is"
#: The band around a body's real outline holds the body's own edge (0.8-1.0 of it), as bright as
#: its inside: ~1; in the fluid around the body it is far darker.
FLUID_RIM_RATIO = 0.5
#: Frames this close to a frame whose outline is a skull's, or crossed by the head's midline echo
#: (same sweep), show the same head: a blind sweep moves ~1 mm a frame, and a head is centimetres
#: from the abdomen. A head's frame whose own ring reads fainter (1.28, its neighbours 1.73 and
#: 1.69) was the case's answer.
SKULL_REACH = 2
BESIDE_SKULL_REASON = ("beside frames that show the head (a skull's bright ring around a darker inside, or "
                       "the midline echo): a section of the head")
FLUID_REASON = "its outline runs through the dark around the body, not along the body's edge"
#: A limb's cross-section is round and of an abdomen's size late in pregnancy (a thigh 80-130 mm
#: round), but its bone lies at its centre: the brightest echo inside the outline, with a shadow
#: behind it. An abdomen's section has none there (its spine and ribs lie at its rim). The
#: brightest point of the inside (smoothed over CENTRAL_SIGMA of the smaller semi-axis) lying
#: within CENTRAL_REACH of the centre (a share of the ellipse's size), CENTRAL_RATIO brighter than
#: the inside's median, and either CENTRAL_LEAD brighter than the brightest of the band round it
#: or with a shadow under it (the grey straight below it at most CENTRAL_SHADOW of that beside
#: it): measured on an independent generator, all 11 limb sections of an abdomen's size (9 had
#: read a plain AC and a GA) against none of the abdomens, cut or whole, of two independent
#: generators and none of the project's own; the brightest point of those abdomens lay at
#: 0.46-0.9 of the size (their spine), a head's midline echo at the centre reads 1.01-1.09 times
#: the band's brightest, with no shadow.
CENTRAL_SIGMA = 0.06
CENTRAL_REACH = 0.3
CENTRAL_RATIO = 1.15
CENTRAL_LEAD = 1.15
CENTRAL_SHADOW = 0.8
CENTRAL_REASON = "its brightest echo lies at its centre, as a limb's bone does; an abdomen's section has none there"
#: A transverse section of the head shows the midline echo (the falx): a thin straight bright line
#: through its centre along its long axis, spanning most of the inside. No abdomen has one (its
#: umbilical vein is a short tube in the anterior third, its spine and ribs lie at its rim, its
#: stomach is a dark blob). A head whose skull ring is thin (1 px at a high gain, the brain as bright
#: as the fluid around it or brighter) has no bright ring for the skull's check to find, and 10 of
#: 110 such heads of an independent generator read a plain AC with a GA. Each candidate line runs
#: within :data:`MIDLINE_TILT` degrees of the fitted ellipse's major axis (steps of
#: :data:`MIDLINE_TILT_STEP`) and within :data:`MIDLINE_REACH` of its smaller semi-axis of its
#: centre; its chord, :data:`MIDLINE_SPAN` of the larger semi-axis either way (inside 0.85 of the
#: ellipse), is cut into :data:`MIDLINE_SEGMENTS` pieces, and each piece's mean grey (averaged along
#: the chord, so speckle cancels) is compared with the brighter of the means of the chords parallel
#: to it :data:`MIDLINE_BESIDE` of the smaller semi-axis away on either side (at least 1 and 2.5 px)
#: and with the inside's typical chord (their median: a strip of tissue between two shadows is
#: brighter only than the shadows beside it), in units of the spread (1.4826 x the median absolute
#: deviation) of such means over the chords across the middle half of the inside. A line
#: :data:`MIDLINE_LEAD` spreads ahead along :data:`MIDLINE_BRIGHT` of the pieces or more (it may be
#: broken, by the cavum septi pellucidi) is a midline echo. Measured on truth outlines
#: (docs/FRAME_CHOICE.md), the lead of those 10 heads: 2.8-13.4 at the frame's size, 2.3-12.3 shrunk
#: to the model's 224 px (a 1-px line there is a third of a pixel wide, and its lead falls to ~0.8
#: of its value); every head of that generator 2.5 and 2.1 or more; abdomens of six generators at
#: most 1.09 and 1.01, the test file's drawn abdomens at most 0.84. The check is narrow: of a
#: generator kept apart until the end it caught 4 of 36 heads that read plain (their midlines
#: fainter, shorter or broken, or their brain displayed white), and no abdomen.
MIDLINE_TILT = 15
MIDLINE_TILT_STEP = 3
MIDLINE_REACH = 0.12
MIDLINE_SPAN = 0.8
MIDLINE_SEGMENTS = 8
MIDLINE_BESIDE = (0.04, 0.14)
MIDLINE_LEAD = 2.0
MIDLINE_BRIGHT = 5
MIDLINE_REASON = ("a straight bright line crosses its middle, as the midline echo of the head does; "
                  "an abdomen has none")
#: A transverse section of the thorax is as round and as large as the abdomen's, but the heart fills
#: about a third of it: blood-filled chambers, dark, side by side, divided by the bright septa and
#: valves. The abdomen's section holds one dark blob (the stomach) and a thin tube (the umbilical
#: vein), far apart. Inside :data:`CHAMBER_REACH` of the fitted ellipse, smoothed over
#: :data:`CHAMBER_SIGMA` of its smaller semi-axis, the pixels darker than the inside's median by
#: :data:`CHAMBER_DARK` times the speckle's spread (what a wider blur leaves; and below
#: :data:`CHAMBER_DARK_RATIO` of the median) form pieces; those of at least :data:`CHAMBER_MIN` of
#: the ellipse's area, compact (minor / major axis of their spread at least :data:`CHAMBER_ROUND`:
#: an acoustic shadow's stripe or the vein is not) and solid (at least :data:`CHAMBER_SOLID` of
#: their convex hull: a dim stretch of tissue crosses the threshold in ragged pieces) are joined
#: across walls up to :data:`CHAMBER_WALL` of the smaller semi-axis thick on each side. Where
#: :data:`CHAMBER_COUNT` or more pieces of one such structure are each at least
#: :data:`CHAMBER_SIMILAR` of its largest, the outline is a thorax's. Septa about 2 px wide at the
#: mask's size are blurred away at that smoothing (the chambers join into one piece, as a stomach
#: is), and chambers whose blood is nearer the lung's grey cross that threshold as one piece joined
#: at their corners: the inside is read again smoothed over :data:`CHAMBER_FINE_SIGMA`, at each of
#: the :data:`CHAMBER_FINE_DEPTHS` (spreads, ratio to the median) in turn. A piece found deeper than
#: the first of them counts only where it fills :data:`CHAMBER_FILL` of the dark piece it lies in at
#: the first: the darker cores of a wide dim stretch (a shadow across the liver) are specks in it
#: (read down to 6 spreads without this, one of this project's own abdomens made three like pieces
#: at the model's size). Measured with ``ac`` on truth outlines that read a plain AC without the
#: check (docs/FRAME_CHOICE.md): thoraxes of two independent generators, 31 of 36 and 12 of 41
#: caught (15 and 9 at the first smoothing alone); of a third, kept apart until the end, 6 more of
#: the 30 the first smoothing left plain; abdomens of five generators, none of 289. The margin is
#: narrow: smoothed over 0.025, a first depth of 2.5 spreads or a ratio of 0.8 made the shadow
#: under an abdomen's spine three pieces; at the model's size, a first depth of 3.5 spreads made a
#: shadow beside the vein three.
CHAMBER_SIGMA = 0.035
CHAMBER_FINE_SIGMA = 0.02
CHAMBER_FINE_DEPTHS = ((3.0, 0.85), (4.0, 0.75))
CHAMBER_FILL = 0.5
CHAMBER_REACH = 0.85
CHAMBER_DARK = 3.0
CHAMBER_DARK_RATIO = 0.85
CHAMBER_MIN = 0.005
CHAMBER_ROUND = 0.45
CHAMBER_SOLID = 0.8
CHAMBER_WALL = 0.12
CHAMBER_SIMILAR = 0.25
CHAMBER_COUNT = 3
#: A piece in an acoustic shadow is no chamber: under a rib the beam's shadow runs straight down the
#: frame to the body's far side, and speckle leaves darker cores in it that cross the threshold as
#: compact pieces, which beside the stomach made three like ones. A piece is set aside where the
#: grey straight below it, from its lower end to the end of the inside (above it, to the inside's
#: top, where under :data:`CHAMBER_SHADOW_MIN` of the smaller semi-axis lies below), is at most
#: :data:`CHAMBER_SHADOW` of the grey in bands :data:`CHAMBER_SHADOW_WIDTH` wide,
#: :data:`CHAMBER_SHADOW_GAP` either side of it over the same rows, and the piece itself is at
#: least :data:`CHAMBER_SHADOW_CORE` of that shadow: a chamber holds blood, darker than the
#: shadowed tissue around it, so a heart lying in a shadow still counts. Grey levels are read
#: above the inside's darkest (its :data:`CHAMBER_SHADOW_FLOOR` th percentile, the blood or the
#: stomach): a washed-out display lifts them all. The margin is narrow: the faint chambers of a
#: heart drawn in a rib's shadow were 0.83-0.94 of the shadow's grey, 0.39-0.74 of it above that
#: floor; the shadow's cores that made a drawn abdomen's third piece 0.8-1.0 above it (one at 0.8
#: still counts), and the chambers of a heart in an independent generator's shadow 0.25-0.3.
CHAMBER_SHADOW = 0.8
CHAMBER_SHADOW_CORE = 0.8
CHAMBER_SHADOW_GAP = 0.15
CHAMBER_SHADOW_WIDTH = 0.3
CHAMBER_SHADOW_MIN = 0.15
CHAMBER_SHADOW_FLOOR = 1.0
CHAMBER_REASON = ("a large dark structure divided by bright walls into chambers lies inside it, as the heart "
                  "does in the chest: a section of the thorax, not of the abdomen")
#: A section of the thorax shows its ribs round much of its circumference, on both sides and often
#: in front, each a bright echo just inside the body's edge with an acoustic shadow below it (down
#: the beam); the abdomen's section shows the spine's bright centres at the back and at most one
#: short rib a side, all on one side of it. The band :data:`RIB_BAND` of the fitted ellipse's size is
#: read, smoothed over :data:`RIB_SIGMA` of its smaller semi-axis; an echo is a piece of pixels
#: brighter than what an opening over :data:`RIB_OPEN` of that semi-axis leaves (the grey round a
#: bright piece narrower than that) by :data:`RIB_BRIGHT` times the spread of that difference inside
#: :data:`RIB_INNER` (speckle's own), of at least :data:`RIB_MIN_PIECE` of the ellipse's area and
#: at most :data:`RIB_LENGTH` of the semi-axis long either way (a stretch of a bright skin line is
#: longer), with a shadow: the grey in the :data:`RIB_SHADOW_DEPTH` of the semi-axis straight below
#: it, within :data:`RIB_SHADOW_REACH` of the size, at most :data:`RIB_SHADOW` of that in the
#: brighter of two bands beside it (:data:`RIB_SHADOW_GAP` away, :data:`RIB_SHADOW_WIDTH` wide). Echoes less than
#: :data:`RIB_APART` degrees apart round the ellipse are one. :data:`RIB_COUNT` or more echoes with
#: no gap between neighbours wider than :data:`RIB_GAP` degrees make the outline a thorax's.
#: Measured on truth outlines read by ``ac``: an independent generator's thoraxes without a heart
#: (ribs 6-12, some missing, 0.15-0.45 mm a pixel) 77 of 120 caught, an audit's 40 frames of one
#: all caught; abdomens of six generators and the project's synthetic cases (the spine's cluster,
#: 0-2 short ribs a side, a bright skin line or none) none, at most 5 echoes, their widest gap at
#: least 187 degrees. The far side's ribs lie in the near ones' shadows and show none of their
#: own: the echoes read are the near side's and the flanks'. Ribs about 0.04 of the radius thick
#: are 1-2 px at the model's 224 pixels, as fine as its speckle, whose pieces with a chance darker
#: stretch below them made 2 of the project's 102 abdomens read 6 echoes there, 113 and 150
#: degrees apart at most: outlines whose smaller semi-axis is under :data:`RIB_MIN_AXIS` px are
#: not read.
RIB_BAND = (0.78, 1.02)
RIB_INNER = 0.7
RIB_SIGMA = 0.015
RIB_OPEN = 0.1
RIB_BRIGHT = 4.0
RIB_MIN_PIECE = 0.002
RIB_LENGTH = 0.5
RIB_SHADOW = 0.8
RIB_SHADOW_DEPTH = 0.3
RIB_SHADOW_REACH = 1.15
RIB_SHADOW_GAP = 0.05
RIB_SHADOW_WIDTH = 0.15
RIB_APART = 10.0
RIB_COUNT = 4
RIB_GAP = 150.0
RIB_MIN_AXIS = 70.0
RIB_REASON = ("bright echoes of ribs, each with its shadow, lie all round it, as round the chest: a section "
              "of the thorax; an abdomen's section shows the spine and at most a short rib each side")
#: An abdomen's outline is an interface (skin against fluid, wall or placenta): along at least a
#: quarter of it the grey levels just inside differ from those just outside. A mask drawn in a
#: featureless stretch of fluid or tissue differs by speckle alone (measured: 0.01-0.07 on such
#: masks of an independent generator's sweeps, 0.10-0.23 on its low-contrast abdomens, >= 0.59
#: on the project's own synthetic abdomens).
MIN_EDGE_CONTRAST = 0.08
#: ... or a bright line on the outline itself: an abdomen packed in tissue as echogenic as its
#: liver (little fluid) shows its edge only as the skin's echo, which the bands beside the outline
#: leave out (truth outlines of such abdomens: 0.04 beside, 0.075-0.09 on the line). In each sector
#: the mean grey of the band :data:`RIDGE_BAND` over the brighter of the bands :data:`RIDGE_BESIDE`
#: (positive part, over their mean), at the 75th percentile of the sectors (:func:`ridge_contrast`):
#: at least this much. Masks drawn in featureless speckle of three textures: at most 0.04 (118).
MIN_RIDGE_CONTRAST = 0.06
RIDGE_BAND = (0.96, 1.04)
RIDGE_BESIDE = ((0.86, 0.93), (1.07, 1.14))
EDGE_INNER = (0.75, 0.95)  # bands just inside and just outside the fitted ellipse (shares of its size)
EDGE_OUTER = (1.05, 1.25)
EDGE_OUTER_THIN = (1.02, 1.1)
EDGE_SECTORS = 24
#: A waist: two notches at least this share of the minor semi-axis deep, facing each other within
#: WAIST_CENTRE of the major semi-axis from the centre (two round bodies touching: 0.14 of it deep
#: where their centres are one radius apart; an abdomen's outline has no such pair).
WAIST_DEPTH = 0.1
WAIST_CENTRE = 0.3
WAIST_MOUTH = 0.8  # and wide: a notch's mouth at least this share of the minor semi-axis (not a bite)
WAIST_REASON = "pinched in the middle, as two bodies side by side are (or a body outlined in part)"
#: A notch: one dent in the outline at least this share of the fitted ellipse's minor semi-axis
#: deep, however narrow its mouth (a bite, which the waist's rule leaves alone). An abdomen's outline
#: is convex (exact outlines of four independent generators: 0.04 at most); a mask that leaves out
#: the body's far part under an acoustic shadow went 0.77-0.86 of the way in and read 2.5-3.5 %
#: short, plain; notches of 0.23-0.33 read about 1 % short.
NOTCH_DEPTH = 0.5
#: ... and the outline's convex hull at least this share larger than the mask: a part of the body
#: left out, not a crack (slits 1-4 px wide, however deep, read under 1 % short; those bites left
#: out 14-17 % of the hull)
NOTCH_AREA = 0.08
NOTCH_REASON = ("notched: a part of it is left out, a dent {depth} (the body outlined in part, as where a "
                "shadow hides it), so the AC may read short")
#: :func:`flattening` at or above this: an AC measured on the outline may be off (short where the
#: body goes on past a flattened side, long where a strand sticks out).
FLATTENED_RATIO = 1.04
FLATTENED_REASON = ("flattened along one side, or with a part sticking out: it is no one ellipse's (the "
                    "body cut by an edge or outlined in part, or a strand leaking out of it), so the AC may "
                    "be off")
OVAL_REASON = ("oval (minor / major axis {ratio}): a transverse section of the abdomen is nearly round, "
               "and an oblique cut reads long")
NO_EDGE_REASON = "its outline follows no edge in the image: the grey inside it is that outside it"
#: Where the body's own edge lies against the outline (:func:`edge_offset`): along each of
#: :data:`EDGE_SECTORS` sectors, the strongest step from brighter inside to darker outside (the
#: body against the fluid around it) between :data:`EDGE_SEARCH` of the fitted ellipse's size,
#: counted where it is at least :data:`MIN_EDGE_STEP` of the level. When at least
#: :data:`MIN_STEP_SECTORS` sectors have one and :data:`OFF_EDGE_SHARE` of them lie beyond
#: :data:`EDGE_NEAR`, the outline is not the body's: inside it (a mask of part of the body, the AC
#: short: a demo model's ellipse inside a low-contrast abdomen read 122.5 mm for 278.6) or outside it.
#: Measured on three generators' drawn abdomens (155 frames): no whole outline off its edge; masks
#: scaled to 0.6-0.75 of it 98-99 % inside, to 0.85 93 %; to 1.15 86 % outside, to 1.2 95 %. A body
#: against a brighter layer (the placenta, the wall) has its strongest step at that layer's far side:
#: such sectors do not say "inside".
EDGE_SEARCH = (0.45, 2.2)
EDGE_STEP_HALF = 0.12  # each side of a step is averaged over this share of the size
MIN_EDGE_STEP = 0.25
MIN_STEP_SECTORS = 8
#: a step counts as an edge when the grey changes across it at least this many times as much as
#: it goes on changing the same way over the next window on either side (a slope is no edge)
EDGE_SHARPNESS = 2.0
#: steps inside the outline in this share of the sectors and outside it in as many: the edge is not
#: seen clearly enough to say which way the outline is off (a low-contrast body flipped frame to frame)
CONTRARY_SHARE = 0.25
#: the sectors' steps scattered wider than this (interquartile range, share of the size) follow no
#: one edge: speckle's chance steps on a low-contrast body. Whole outlines in fluid or tissue of
#: another grey spread 0.02-0.09; on low-contrast bodies masks 20 % inside or 25 % outside the body
#: read plain ACs (the chance steps fell on both sides) where the spread was 0.3-1.0
EDGE_SPREAD = 0.3
OFF_EDGE_SHARE = 0.5
#: where the strongest step may lie for the outline to be the body's: whole outlines read 1.04-1.13
#: (the step's windows put it a little outside); 0.93 is an edge ~12 % inside, 1.2 ~15 % outside
EDGE_NEAR = (0.93, 1.2)
# (said as what the picture shows, not as a cause: a washed-out display shows fluid too grey for a
# clear step, and a body packed in tissue shows its edge where no fluid is)
UNVERIFIED_REASON = ("not checked against the body's edge: too little of the body's edge shows (no fluid "
                     "around it, or too little contrast with it), so an outline inside or outside the body "
                     "reads the same and the AC may be off")
INSIDE_REASON = ("inside the body's edge: a stronger edge of the body runs outside it (the mask may cover "
                 "only part of the body), so the AC reads short")
OUTSIDE_REASON = ("outside the body's edge: the body's edge runs inside it (the mask may take in what lies "
                  "around the body), so the AC reads long")


@dataclass(frozen=True)
class MaskShape:
    """The ellipse-likeness of one frame's mask (model resolution). ``plausible`` is the verdict,
    ``reason`` the first failed check (empty when plausible)."""

    plausible: bool
    quality: float  # fit IoU when plausible, else 0
    ellipse_area_px: float
    iou: float
    axis_ratio: float
    in_fan: float
    circumference_mm: float | None
    reason: str = ""
    #: the fitted ellipse ``((cx, cy), (w, h), angle)`` in mask pixels (cv2's), None without a fit
    ellipse: tuple | None = None
    #: :func:`rim_ratio` on the frame's grey levels (None: not measured, or no frame given)
    rim: float | None = None
    #: a plausible outline pinched in the middle (:func:`_waist`): the frame may still be chosen,
    #: but an AC measured on it is doubtful (two bodies side by side measure as one)
    pinched: bool = False
    #: a plausible outline flattened along one side (:func:`flattening`): the same, as the body
    #: may go on past that side (cut by an edge, or outlined in part)
    flattened: bool = False
    #: how deep the outline's deepest dent goes, as a share of the minor semi-axis (:func:`notch_depth`):
    #: from :data:`NOTCH_DEPTH` on, a part of the body is left out and the AC is doubtful
    notch: float = 0.0
    #: "inside" or "outside": the body's own edge lies outside or inside the outline; "unverified":
    #: too little of the edge shows to tell (:func:`edge_offset`); the frame may still be chosen,
    #: an AC measured on it is doubtful
    off_edge: str = ""
    #: a plausible outline with a large share of it outside the field of view (or the image) whose
    #: seen arc is no exact ellipse (:func:`arc_deviation`): the AC extrapolated from it may be off
    extrapolated: float = 0.0
    arc_deviation: float = 0.0

    @property
    def extrapolated_far(self) -> bool:
        """Too much of the outline is extrapolated from an arc that is not exactly an ellipse's
        (:data:`EXTRAPOLATED_DOUBT`, :func:`arc_tolerance`)."""
        if not self.plausible or self.extrapolated < EXTRAPOLATED_DOUBT:
            return False
        return self.extrapolated >= EXTRAPOLATED_FAR or (self.ellipse is not None
                                                          and self.arc_deviation > arc_tolerance(self.ellipse))

    @property
    def oval(self) -> bool:
        """A plausible outline much longer than wide (:data:`ROUND_RATIO`): an oblique section."""
        return self.plausible and self.axis_ratio < ROUND_RATIO

    @property
    def problem(self) -> str | None:
        """Why an AC measured on the mask is doubtful: it is not an abdomen's outline, or one
        pinched in the middle, flattened along one side or oval; None when it is a plausible one
        (:func:`~fetaliqa_core.analysis.units.read_ac`)."""
        if self.plausible:
            off = {"inside": INSIDE_REASON, "outside": OUTSIDE_REASON,
                   "unverified": UNVERIFIED_REASON}.get(self.off_edge)
            # (as many digits as it takes not to read as the limit itself: 0.695 is not "0.70")
            if self.pinched:  # (two bodies side by side are long together: that is no oblique cut)
                shape = WAIST_REASON
            elif self.notch >= NOTCH_DEPTH:
                shape = NOTCH_REASON.format(depth=f"{self.notch:.0%} of the way to its centre" if self.notch < 1
                                            else "reaching past its centre")
            else:
                oval = OVAL_REASON.format(ratio=beside_threshold(self.axis_ratio, ROUND_RATIO)) if self.oval else None
                # both said: "flattened" alone reads short, an oblique cut reads long
                shape = f"{FLATTENED_REASON}; and {oval}" if self.flattened and oval else (
                    FLATTENED_REASON if self.flattened else oval)
            if self.extrapolated_far:
                far = EXTRAPOLATED_REASON.format(share=self.extrapolated, why=(
                    "" if self.extrapolated >= EXTRAPOLATED_FAR else ", and the arc that shows is no exact ellipse"))
                shape = f"{shape}; and {far}" if shape else far
            # where the body's edge lies says which way the AC is off: said first
            return f"{off}; and {shape}" if off and shape else off or shape
        return self.reason or "not ellipse-like"


NO_MASK = MaskShape(False, 0.0, 0.0, 0.0, 0.0, 0.0, None, "no mask")


def mask_shape(mask: np.ndarray, fov: np.ndarray | None = None,
               px_mm: float | tuple[float, float] | None = None,
               grey: np.ndarray | Callable[[], np.ndarray | None] | None = None) -> MaskShape:
    """Plausibility of one label mask ``(S, S)`` (non-zero = abdomen) inside ``fov`` (bool, same
    shape; None: the whole image). ``px_mm``: size of one mask pixel in mm, one number or
    ``(row_mm, col_mm)`` (None: unknown); with pixels that are not square, the axis ratio and the
    circumference are those of the outline in mm (a round abdomen is not round in such pixels).
    ``grey``: the frame's grey levels at the mask's size (uint8 ``(S, S)``), or a function giving
    them, called only when the shape alone is plausible; None: the outline is judged by its
    shape alone (:func:`judge_outline`)."""
    region = np.asarray(mask) != 0
    if fov is not None:
        region &= fov
    total = int(region.sum())
    if total < 6:
        return NO_MASK
    n, lab, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    piece = lab == k
    share = float(stats[k, cv2.CC_STAT_AREA]) / total
    contours, _ = cv2.findContours(piece.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len)
    outline = contour.reshape(-1, 2)
    # the outline along the fan's edge is the fan's, not the abdomen's: fit the rest
    zone = _border_zone(fov, region.shape)
    keep = ~zone[outline[:, 1], outline[:, 0]]
    along = 1.0 - float(keep.mean())  # the share of the outline that runs along the field's edge
    outline = outline[keep]
    if len(outline) < 6:
        return MaskShape(False, 0.0, 0.0, 0.0, 0.0, 0.0, None, "too small or cut off")
    (cx, cy), (w, h), angle = cv2.fitEllipse(outline.astype(np.float32).reshape(-1, 1, 2))
    if not all(math.isfinite(v) for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
        return MaskShape(False, 0.0, 0.0, 0.0, 0.0, 0.0, None, "no ellipse")
    if max(w, h) > 4 * max(region.shape):
        return MaskShape(False, 0.0, 0.0, 0.0, 0.0, 0.0, None, "not ellipse-like")
    a, b = max(w, h) / 2.0, min(w, h) / 2.0
    filled = np.zeros(region.shape, np.uint8)
    cv2.ellipse(filled, ((cx, cy), (w, h), angle), 1, -1)
    ell = filled != 0
    ell_area = float(math.pi * a * b)
    # the share of the whole ellipse inside the field of view: what lies past the image's own edge
    # is outside it too (drawn on the image, the ellipse was clipped there, and an arc in a corner
    # passed as a whole abdomen whose AC was extrapolated from a quarter of it)
    inside = float(ell.sum() if fov is None else (ell & fov).sum())
    in_fan = min(1.0, inside / max(ell_area, float(ell.sum()), 1.0))
    clipped = ell if fov is None else ell & fov
    # what the fitted ellipse leaves outside, and the edge the mask is cut along beyond what the
    # ellipse, clipped the same way, runs along (the hidden outline is no shorter than that chord):
    # the narrow end of an egg-shaped abdomen cut off, its fitted ellipse fat, left 0-10 % outside
    # where 9-16 % of the outline was, and read 1.4-2.8 % short. (The chord alone counted outline
    # pixels that touch the edge: an outline whole but for a touch read 6-12 % unseen.)
    extrapolated = _outline_outside((cx, cy), (w, h), angle, fov, region.shape)
    extrapolated += max(0.0, along - _edge_run(clipped, zone))
    union = float((clipped | piece).sum())
    iou = float((clipped & piece).sum()) / union if union else 0.0
    ratio = b / a
    row_mm, col_mm = (px_mm, px_mm) if px_mm is None or np.isscalar(px_mm) else (float(px_mm[0]), float(px_mm[1]))
    circ = None
    if row_mm and col_mm and abs(row_mm - col_mm) > 0.01 * max(row_mm, col_mm):
        fit_mm = _fit(outline * np.array([col_mm, row_mm]))  # (x, y) = (column, row), as measure_ac fits
        if fit_mm is not None:
            ratio = min(fit_mm[1]) / max(fit_mm[1])
            circ = ramanujan_circumference(*fit_mm[1])
    elif row_mm:
        circ = ramanujan_circumference(a, b) * float(row_mm)
    reason = ""
    if share < MIN_PIECE_SHARE:
        reason = "fragmented"
    elif iou < MIN_FIT_IOU:
        reason = "not ellipse-like"
    elif ratio < MIN_AXIS_RATIO:
        reason = "elongated"
    elif in_fan < MIN_IN_FAN or extrapolated > MAX_EXTRAPOLATED:
        reason = (f"cut off: {extrapolated:.0%} of its outline and {1 - in_fan:.0%} of its area lie outside the "
                  "field of view (or the image), so the AC would be extrapolated")
    elif circ is not None and not (AC_PLAUSIBLE_MM[0] * (1 - SIZE_MARGIN) <= round(circ, 1)
                                   <= AC_PLAUSIBLE_MM[1] * (1 + SIZE_MARGIN)):
        reason = "implausible size"
    elif circ is None:
        fov_area = float(region.size if fov is None else fov.sum())
        lo, hi = AREA_SHARE_OF_FOV
        if not lo <= ell_area / max(fov_area, 1.0) <= hi:
            reason = "implausible size"
    ok = not reason
    ellipse = ((float(cx), float(cy)), (float(w), float(h)), float(angle))
    shape = MaskShape(ok, iou if ok else 0.0, ell_area, iou, ratio, in_fan, circ, reason, ellipse=ellipse,
                      pinched=ok and _waist(contour, (cx, cy), (w, h), angle),
                      notch=notch_depth(contour, b, float(stats[k, cv2.CC_STAT_AREA])) if ok else 0.0,
                      flattened=ok and flattening(outline) >= FLATTENED_RATIO,
                      extrapolated=extrapolated,
                      arc_deviation=arc_deviation(outline, ellipse) if extrapolated >= EXTRAPOLATED_DOUBT else 0.0)
    if ok and grey is not None:
        shape = judge_outline(shape, grey() if callable(grey) else grey, fov)
    return shape


def _edge_run(region: np.ndarray, zone: np.ndarray) -> float:
    """The share of ``region``'s outer outline (its largest piece's) that lies in ``zone``."""
    contours, _ = cv2.findContours(np.asarray(region, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    outline = max(contours, key=len).reshape(-1, 2)
    return float(zone[outline[:, 1], outline[:, 0]].mean())


def arc_deviation(outline: np.ndarray, ellipse: tuple) -> float:
    """The rms radial deviation of outline points ``(N, 2)`` (x, y) from an ellipse
    ``((cx, cy), (w, h), angle)`` (cv2's), as a share of its radius along each point's direction."""
    center, (w, h), angle = ellipse
    r = _ellipse_radii(np.asarray(outline, np.float64).reshape(-1, 2), center, (w / 2.0, h / 2.0), angle)
    return float(np.sqrt(np.mean((r - 1.0) ** 2))) if len(r) else 0.0


def _ellipse_radii(pts: np.ndarray, center: tuple, semi_axes: tuple, angle: float) -> np.ndarray:
    """Each point's distance from an ellipse's centre over the ellipse's radius in its direction
    (1 on the ellipse, below 1 inside it); ``angle`` in degrees, as cv2 gives it."""
    t = math.radians(angle)
    x, y = pts[:, 0] - center[0], pts[:, 1] - center[1]
    u, v = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    return np.hypot(u / max(semi_axes[0], 1e-9), v / max(semi_axes[1], 1e-9))


def arc_tolerance(ellipse: tuple) -> float:
    """The deviation :func:`arc_deviation` allows a seen arc before an AC extrapolated from it
    is doubtful (:data:`ARC_TOLERANCE` plus the pixel steps of an ellipse this size)."""
    return ARC_TOLERANCE + ARC_PIXEL_TOLERANCE / max(min(ellipse[1]) / 2.0, 1.0)


def _outline_outside(center: tuple, size: tuple, angle: float, fov: np.ndarray | None,
                     shape: tuple[int, int]) -> float:
    """The share of a fitted ellipse's outline (360 points, by angle) that lies outside the
    field of view or past the image's edge: the part of the AC that is extrapolated, not seen."""
    t = np.linspace(0.0, 2.0 * np.pi, 360, endpoint=False)
    r = math.radians(angle)
    u, v = size[0] / 2.0 * np.cos(t), size[1] / 2.0 * np.sin(t)
    x = center[0] + u * math.cos(r) - v * math.sin(r)
    y = center[1] + u * math.sin(r) + v * math.cos(r)
    xi, yi = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    inside = (xi >= 0) & (yi >= 0) & (xi < shape[1]) & (yi < shape[0])
    if fov is not None:
        inside[inside] = fov[yi[inside], xi[inside]]
    return float(1.0 - inside.mean())


def flattening(outline: np.ndarray) -> float:
    """How much longer the outline's ellipse is when fitted to the points on or outside it
    only: the ellipse fitted to all of them, then again to those at or beyond 0.97 of it (four
    times); the second's circumference over the first's. A whole outline, smooth or ragged, is its
    own ellipse (1.00 on every annotated abdomen of two synthetic cases at model resolution; on
    ellipses with ragged edges median 1.00, 95 % below 1.035); one flattened along a side, by an
    edge that cut the body (another probe's fan: ACs 4 and 11 % short gave 1.04 and 1.13) or by a
    mask covering part of it (the demo segmenter's plausible masks: 1.06-1.24), has a stretch
    inside its ellipse that pulls the fit in. ``outline``: ``(N, 2)`` points (x, y) of the
    outline the AC is fitted to."""
    pts = np.asarray(outline, np.float64).reshape(-1, 2)
    first = _fit(pts) if len(pts) >= 20 else None
    if first is None:
        return 1.0
    fit = first
    for _ in range(4):
        outer = pts[_ellipse_radii(pts, *fit) >= 0.97]
        if len(outer) < 20:
            break
        fit = _fit(outer)
        if fit is None:
            return 1.0
    return float(ramanujan_circumference(*fit[1]) / ramanujan_circumference(*first[1]))


def _defects(contour: np.ndarray) -> np.ndarray | None:
    """The convexity defects of an outline ``(N, 1, 2)``, rows ``(start, end, deepest point,
    depth * 256)``; None where it has none or crosses itself."""
    hull = cv2.convexHull(contour, returnPoints=False)
    if hull is None or len(hull) < 4:
        return None
    try:
        defects = cv2.convexityDefects(contour, np.sort(hull.ravel())[::-1].reshape(-1, 1).astype(np.int32))
    except cv2.error:  # an outline that crosses itself
        return None
    return None if defects is None else defects.reshape(-1, 4)


def notch_depth(contour: np.ndarray, minor: float, area: float | None = None) -> float:
    """How far the deepest dent in an outline goes in from its convex hull, as a share of the
    fitted ellipse's minor semi-axis ``minor`` (pixels); 0 for a convex one, and, given the mask's
    ``area`` (pixels), for one whose hull is less than :data:`NOTCH_AREA` larger (a crack, not a
    part left out)."""
    rows = _defects(contour)
    if rows is None or minor <= 0:
        return 0.0
    if area is not None:
        hull = float(cv2.contourArea(cv2.convexHull(contour)))
        if hull <= 0 or 1.0 - area / hull < NOTCH_AREA:
            return 0.0
    return float(rows[:, 3].max() / 256.0 / minor)


def _waist(contour: np.ndarray, center: tuple, size: tuple, angle: float) -> bool:
    """Whether an outline is pinched in the middle: two wide notches, each at least
    :data:`WAIST_DEPTH` of the fitted ellipse's minor semi-axis deep, on opposite sides of its
    major axis and facing each other across its centre, as where two round bodies touch (twins
    side by side). An abdomen's outline is convex, or flattened on one side at most."""
    rows = _defects(contour)
    if rows is None:
        return False
    a, b = max(size) / 2.0, min(size) / 2.0
    outline = contour.reshape(-1, 2).astype(float)
    span = np.linalg.norm(outline[rows[:, 0]] - outline[rows[:, 1]], axis=1)  # the notch's mouth
    deep = rows[(rows[:, 3] / 256.0 >= WAIST_DEPTH * b) & (span >= WAIST_MOUTH * b)]
    if len(deep) < 2:
        return False
    theta = math.radians(angle + (0.0 if size[0] >= size[1] else 90.0))  # along the major axis
    axis = np.array([math.cos(theta), math.sin(theta)])
    normal = np.array([-axis[1], axis[0]])
    centre = np.asarray(center, float)
    points = outline[deep[:, 2]] - centre
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            p, q = points[i], points[j]
            if (p @ normal) * (q @ normal) >= 0:
                continue  # the same side of the major axis
            t = np.clip(-(p @ (q - p)) / max(float((q - p) @ (q - p)), 1e-9), 0.0, 1.0)
            if float(np.linalg.norm(p + t * (q - p))) <= WAIST_CENTRE * a:
                return True
    return False


def _band_sampler(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple, n_angles: int,
                  sigma: float | None = None) -> Callable[[float, float, int], tuple[np.ndarray, np.ndarray]] | None:
    """Samples of the frame's grey levels ``grey`` (lightly smoothed: one model pixel, or ``sigma``
    pixels) along bands around a fitted ellipse: ``sample(lo, hi, n_scales)`` gives the grey levels
    and whether each point lies in the image and the field of view ``fov`` (bool or None), both
    ``(n_scales, n_angles)``, at scales ``lo``..``hi`` of the ellipse's size and ``n_angles``
    evenly spread angles. None when the frame is no 2-D image or the ellipse no finite one."""
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim != 2 or not all(math.isfinite(float(v)) for v in (*ellipse[0], *ellipse[1], ellipse[2])):
        return None
    h_img, w_img = g.shape
    (cx, cy), (w, h), angle = ellipse
    if sigma is None:
        sigma = max(1.0, max(g.shape) / 224.0)  # one model pixel, at the model's or the frame's size
    g = cv2.GaussianBlur(g, (0, 0), sigma)
    inside = np.ones(g.shape, bool) if fov is None else np.asarray(fov, bool)
    t = np.linspace(0.0, 2.0 * math.pi, n_angles, endpoint=False)
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def sample(lo: float, hi: float, n_scales: int) -> tuple[np.ndarray, np.ndarray]:
        scales = np.linspace(lo, hi, n_scales)[:, None]
        ex, ey = scales * (w / 2.0) * np.cos(t), scales * (h / 2.0) * np.sin(t)
        xi = np.rint(cx + ex * ca - ey * sa).astype(np.int64)
        yi = np.rint(cy + ex * sa + ey * ca).astype(np.int64)
        ok = (xi >= 0) & (xi < w_img) & (yi >= 0) & (yi < h_img)
        xi, yi = np.clip(xi, 0, w_img - 1), np.clip(yi, 0, h_img - 1)
        return g[yi, xi], ok & inside[yi, xi]

    return sample


def rim_ratio(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple,
              band: tuple[float, float] | None = None) -> float | None:
    """How much brighter a fitted ellipse's outline echoes than the inside of the shape, on the
    frame's grey levels ``grey`` (the mask's size; ``fov`` bool or None): at :data:`RIM_ANGLES`
    angles, the brightest level (lightly smoothed) of the band :data:`RIM_BAND` (or ``band``) and
    of the band :data:`RIM_INNER` (shares of the ellipse's size); the median of the first over the
    median of the second. Comparing the brightest levels of two bands of the same width makes
    speckle cancel: a homogeneous texture gives ~1 at any gain. None when fewer than
    :data:`MIN_RIM_ANGLES` of the angles have both bands inside the image and the field of view."""
    return _ratio(rim_levels(grey, fov, ellipse, band))


def _ratio(levels: tuple[float, float] | None) -> float | None:
    """The rim ratio of :func:`rim_levels`' two medians (the inside's floored at 4 grey levels)."""
    return None if levels is None else levels[0] / max(levels[1], 4.0)


def rim_levels(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple,
               band: tuple[float, float] | None = None, fine: bool = False) -> tuple[float, float] | None:
    """The two medians :func:`rim_ratio` compares: ``(outline's band, inside band)`` in grey levels.
    ``fine``: smoothed over :data:`SKULL_FINE_SIGMA` px only and sampled at most 1 px apart across
    either band, so that a ring ~2 px wide keeps its peak (else 11 samples across either band)."""
    sample = _band_sampler(grey, fov, ellipse, RIM_ANGLES, SKULL_FINE_SIGMA if fine else None)
    if sample is None:
        return None
    band = RIM_BAND if band is None else band
    # (11 samples across either band at the usual smoothing: sampling the skull's band more finely
    # there called more whole abdomens with a bright skin line and a placenta beyond a skull; the
    # fine reading has a stricter threshold of its own, SKULL_FINE_RATIO)
    half = max(ellipse[1]) / 2.0
    across = (lambda lo, hi: max(11, int(math.ceil((hi - lo) * half)) + 1)) if fine else (lambda lo, hi: 11)
    rim, rim_ok = sample(*band, across(*band))
    inner, inner_ok = sample(*RIM_INNER, across(*RIM_INNER))
    valid = rim_ok.all(axis=0) & inner_ok.all(axis=0)
    if valid.sum() < MIN_RIM_ANGLES * RIM_ANGLES:
        return None
    rim, inner = rim.max(axis=0), inner.max(axis=0)
    return float(np.median(rim[valid])), float(np.median(inner[valid]))


def _skull_like(levels: tuple[float, float] | None) -> float | None:
    """The rim ratio of ``levels`` when they make the outline a skull's (:data:`SKULL_RIM_RATIO`,
    or :data:`SKULL_LEAD` grey levels ahead at :data:`SKULL_LEAD_RATIO`), else None."""
    ratio = _ratio(levels)
    if ratio is None:
        return None
    if ratio >= SKULL_RIM_RATIO or (ratio >= SKULL_LEAD_RATIO and levels[0] - levels[1] >= SKULL_LEAD):
        return ratio
    return None


def _sector_sampler(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple,
                    across: int) -> Callable[[float, float], tuple[np.ndarray, np.ndarray]] | None:
    """``by_sector(lo, hi)``: the grey levels of the band ``lo``-``hi`` (shares of the ellipse's
    size) at 8 angles in each of :data:`EDGE_SECTORS` sectors and ``across`` radii, one row a sector,
    and which of them lie in the image and the field of view; None when the ellipse cannot be sampled."""
    per = 8  # angles a sector
    sample = _band_sampler(grey, fov, ellipse, EDGE_SECTORS * per)
    if sample is None:
        return None

    def by_sector(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        v, ok = sample(lo, hi, across)
        return tuple(a.reshape(-1, EDGE_SECTORS, per).transpose(1, 0, 2).reshape(EDGE_SECTORS, -1) for a in (v, ok))

    return by_sector


def _sector_means(values: np.ndarray, ok: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The mean of each ``valid`` sector's samples that lie in the image and the field of view."""
    return np.array([values[k][ok[k]].mean() for k in np.flatnonzero(valid)])


def edge_contrast(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> float | None:
    """How clearly a fitted ellipse follows an edge of the frame's grey levels ``grey`` (the
    mask's size; ``fov`` bool or None): in each of :data:`EDGE_SECTORS` sectors, the mean grey of
    the band :data:`EDGE_INNER` just inside and of :data:`EDGE_OUTER` just outside, and their
    difference over their mean (floored at 8 grey levels); the 75th percentile over the sectors
    whose bands lie in the image and the field of view. Means over a sector average speckle out.
    None when fewer than a quarter of the sectors can be measured."""
    by_sector = _sector_sampler(grey, fov, ellipse, 7)
    if by_sector is None:
        return None
    vi, oki = by_sector(*EDGE_INNER)
    best = None
    # the band just outside, and a narrower one: a thin layer of fluid between the body and brighter
    # tissue averaged out over the wider band (a whole abdomen "followed no edge", 50-80 % of frames)
    for outer in (EDGE_OUTER, EDGE_OUTER_THIN):
        vo, oko = by_sector(*outer)
        valid = (oki.mean(axis=1) >= 0.8) & (oko.mean(axis=1) >= 0.8)
        if valid.sum() < EDGE_SECTORS // 4:
            continue
        mi, mo = _sector_means(vi, oki, valid), _sector_means(vo, oko, valid)
        # (the thin band counts the body brighter than the layer only: its fewer samples make
        # speckle's differences larger, either way)
        step = np.abs(mi - mo) if outer == EDGE_OUTER else np.maximum(mi - mo, 0.0)
        e = float(np.percentile(step / np.maximum((mi + mo) / 2.0, 8.0), 75))
        best = e if best is None else max(best, e)
    return best


def ridge_contrast(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> float | None:
    """How much brighter a line along a fitted ellipse's outline is than the grey on both sides of
    it, on the frame's grey levels ``grey`` (``fov`` bool or None): in each of :data:`EDGE_SECTORS`
    sectors, the mean grey of the band :data:`RIDGE_BAND` less the brighter of the two bands
    :data:`RIDGE_BESIDE` (0 when not brighter), over the three bands' mean (floored at 8 grey
    levels); the 75th percentile over the sectors whose bands lie in the image and the field of
    view. None when fewer than a quarter of the sectors can be measured."""
    by_sector = _sector_sampler(grey, fov, ellipse, 5)
    if by_sector is None:
        return None
    bands = [by_sector(*RIDGE_BAND), *(by_sector(*b) for b in RIDGE_BESIDE)]
    valid = np.logical_and.reduce([ok.mean(axis=1) >= 0.8 for _, ok in bands])
    if valid.sum() < EDGE_SECTORS // 4:
        return None
    on, near, far = (_sector_means(v, ok, valid) for v, ok in bands)
    step = np.maximum(on - np.maximum(near, far), 0.0)
    return float(np.percentile(step / np.maximum((on + near + far) / 3.0, 8.0), 75))


def judge_outline(shape: MaskShape, grey: np.ndarray | None, fov: np.ndarray | None) -> MaskShape:
    """``shape`` with the frame's verdict on its outline: a plausible mask whose :func:`rim_ratio`
    reaches :data:`SKULL_RIM_RATIO` outlines a skull, one below :data:`FLUID_RIM_RATIO` runs
    through the fluid around the body, and one whose :func:`edge_contrast` is below
    :data:`MIN_EDGE_CONTRAST` follows no edge; one crossed by a straight bright line along its long
    axis is a head's (:func:`midline_echo`), one with its brightest echo at its centre a limb's
    (:func:`central_echo`), one holding the heart's chambers a thorax's (:func:`heart_chambers`), as
    is one with ribs' echoes and their shadows all round it (:func:`rib_ring`); none is an abdomen's outline (not plausible, with the reason). Unchanged when the shape is
    already not plausible or there is no frame. Where ``fov`` leaves out the bands round the
    outline along most of it, the skull's ring is looked for without it."""
    if not shape.plausible or shape.ellipse is None or grey is None:
        return shape
    own = rim_levels(grey, fov, shape.ellipse)
    wide = rim_levels(grey, fov, shape.ellipse, SKULL_BAND)
    r = _ratio(own)
    # a large head: the wider band leaves the image or the fan along most angles; the outline's
    # own band still sees its ring (three skulls read 'AC 249-288 mm, GA 29-33w' without a doubt)
    skull = _skull_like(own if wide is None else wide)
    if own is None and wide is None and fov is not None:
        # the field of view leaves out what lies just round the outline along most of it: a fan
        # found from one frame whose fluid is shown as black with sparse speckle is the body alone
        # (its bright layers and all), and heads of an independent generator read 'AC 270 mm, GA
        # 31w' without a doubt. Their ring is looked for on the frame as it is then (the black
        # beyond a real fan's edge is no skull's echo); the other checks keep the field of view
        # (read without it, thoraxes that field of view had left doubtful read plain)
        own, wide = rim_levels(grey, None, shape.ellipse), rim_levels(grey, None, shape.ellipse, SKULL_BAND)
        skull = _skull_like(own if wide is None else wide)
        fov_for_skull = None
    else:
        fov_for_skull = fov
    if skull is None:
        # a thin ring (~2 px) is smoothed and sampled away above: read again finely, stricter
        fine = rim_levels(grey, fov_for_skull, shape.ellipse, SKULL_BAND, fine=True)
        fine = _ratio(rim_levels(grey, fov_for_skull, shape.ellipse, fine=True) if fine is None else fine)
        skull = fine if fine is not None and fine >= SKULL_FINE_RATIO else None
    if skull is not None:
        return replace(shape, plausible=False, quality=0.0, reason=SKULL_REASON, rim=skull)
    if midline_echo(grey, fov, shape.ellipse):
        # (a skull whose ring is too thin or too faint to tell still shows the midline echo)
        return replace(shape, plausible=False, quality=0.0, reason=MIDLINE_REASON, rim=r)
    if central_echo(grey, fov, shape.ellipse):
        return replace(shape, plausible=False, quality=0.0, reason=CENTRAL_REASON, rim=r)
    if heart_chambers(grey, fov, shape.ellipse):
        return replace(shape, plausible=False, quality=0.0, reason=CHAMBER_REASON, rim=r)
    if rib_ring(grey, fov, shape.ellipse):
        return replace(shape, plausible=False, quality=0.0, reason=RIB_REASON, rim=r)
    if r is not None and r < FLUID_RIM_RATIO:
        return replace(shape, plausible=False, quality=0.0, reason=FLUID_REASON, rim=r)
    e = edge_contrast(grey, fov, shape.ellipse)
    if e is not None and e < MIN_EDGE_CONTRAST:
        ridge = ridge_contrast(grey, fov, shape.ellipse)  # (the skin's echo on the outline is an edge too)
        if ridge is None or ridge < MIN_RIDGE_CONTRAST:
            return replace(shape, plausible=False, quality=0.0, reason=NO_EDGE_REASON, rim=r)
    return replace(shape, rim=r, off_edge=edge_offset(grey, fov, shape.ellipse))


def _ellipse_box(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple, smallest: float, room: int):
    """A fitted ellipse's bounding box in ``grey`` (with room for a blur), as the readings of its
    inside take it: ``(crop, seen, xx, yy, rho, a, b)``: the box's grey levels (float32), which of
    its pixels lie in the field of view ``fov`` (all where None), their x and y, their elliptic
    radius (1 on the ellipse) and the semi-axes. None when the frame is not 2-D, the ellipse not a
    number, its smaller semi-axis under ``smallest`` pixels or the box under ``room`` pixels a side."""
    g = np.asarray(grey)
    (cx, cy), (w, h), angle = ellipse
    a, b = w / 2.0, h / 2.0
    if g.ndim != 2 or not all(math.isfinite(float(v)) for v in (cx, cy, a, b, angle)) or min(a, b) < smallest:
        return None
    r = max(a, b)
    x0, x1 = max(int(cx - r) - 2, 0), min(int(cx + r) + 3, g.shape[1])
    y0, y1 = max(int(cy - r) - 2, 0), min(int(cy + r) + 3, g.shape[0])
    if x1 - x0 < room or y1 - y0 < room:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    dx, dy = xx - cx, yy - cy
    rho = np.hypot((dx * ca + dy * sa) / a, (-dx * sa + dy * ca) / b)
    seen = np.ones(rho.shape, bool) if fov is None else np.asarray(fov, bool)[y0:y1, x0:x1]
    return g[y0:y1, x0:x1].astype(np.float32), seen, xx, yy, rho, a, b


def central_echo(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> bool:
    """Whether the brightest echo inside a fitted ellipse lies at its centre, as a limb's bone
    does (:data:`CENTRAL_REASON`), on the frame's grey levels ``grey`` (the mask's size; ``fov``
    bool or None). False when too little of the inside lies in the image and the field of view
    to tell."""
    box = _ellipse_box(grey, fov, ellipse, smallest=4.0, room=8)
    if box is None:
        return False
    crop, seen, xx, yy, rho, a, b = box
    sigma = max(1.0, CENTRAL_SIGMA * min(a, b))
    smooth = cv2.GaussianBlur(crop, (0, 0), sigma)
    inside, core = rho < 0.9, rho < CENTRAL_REACH
    band = (rho > 0.45) & (rho < 0.8)
    # the inside must be seen, most of it: the black beyond a fan's edge is no echo
    if (inside & seen).sum() < 0.8 * inside.sum() or not (core & seen).any() or not (band & seen).any():
        return False
    level = np.where(inside & seen, smooth, -1.0)
    top = np.unravel_index(int(np.argmax(level)), level.shape)
    if rho[top] >= CENTRAL_REACH:
        return False
    peak = float(smooth[top])
    if peak < CENTRAL_RATIO * max(float(np.median(smooth[band & seen])), 4.0):
        return False
    if peak >= CENTRAL_LEAD * max(float(smooth[band & seen].max()), 4.0):
        return True
    # or a shadow: the grey straight below the peak (down the beam) against that either side of it
    m = min(a, b)
    below = (yy > yy[top] + 0.2 * m) & (rho < 0.85) & seen
    column = below & (np.abs(xx - xx[top]) < 0.15 * m)
    beside = below & (np.abs(np.abs(xx - xx[top]) - 0.45 * m) < 0.12 * m)
    if column.sum() < 6 or beside.sum() < 6:
        return False
    return float(smooth[column].mean()) <= CENTRAL_SHADOW * max(float(smooth[beside].mean()), 4.0)


def midline_echo(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> bool:
    """Whether a straight bright line crosses the middle of a fitted ellipse along its major axis,
    as the head's midline echo does (:data:`MIDLINE_REASON`), on the frame's grey levels ``grey``
    (the mask's size; ``fov`` bool or None): along :data:`MIDLINE_BRIGHT` or more of its
    :data:`MIDLINE_SEGMENTS` pieces, :data:`MIDLINE_LEAD` spreads brighter than the chords beside
    it. False when too little of the inside lies in the image and the field of view to tell."""
    return midline_lead(grey, fov, ellipse) >= MIDLINE_LEAD


def midline_lead(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> float:
    """How far the likeliest midline of a fitted ellipse stands above the chords beside it
    (:func:`midline_echo`): over the candidate lines, the most that :data:`MIDLINE_BRIGHT` of its
    pieces all lead by, in spreads; -inf when no line can be read."""
    g = np.asarray(grey, dtype=np.float32)
    (cx, cy), (w, h), angle = ellipse
    if g.ndim != 2 or not all(math.isfinite(float(v)) for v in (cx, cy, w, h, angle)):
        return -math.inf
    a, b, phi = (w / 2.0, h / 2.0, angle) if w >= h else (h / 2.0, w / 2.0, angle + 90.0)
    if b < 4.0:
        return -math.inf
    seen_img = np.ones(g.shape, np.float32) if fov is None else np.asarray(fov, bool).astype(np.float32)
    span = MIDLINE_SPAN * a
    us = np.arange(-span, span + 1e-6, 1.0, dtype=np.float32)  # along the line, 1 px apart
    if len(us) < 2 * MIDLINE_SEGMENTS:  # (too short a chord for its pieces: a mask of a few pixels)
        return -math.inf
    vs = np.arange(-0.5 * b, 0.5 * b + 1e-6, 0.5, dtype=np.float32)  # across it, half a pixel apart
    n = MIDLINE_SEGMENTS
    starts = np.searchsorted(np.minimum(((us + span) / (2.0 * span) * n).astype(int), n - 1), np.arange(n))
    widths = np.diff(np.append(starts, len(us)))
    # the chords beside a candidate, in rows (half pixels) either side
    near, far = int(math.ceil(2.0 * max(1.0, MIDLINE_BESIDE[0] * b))), int(2.0 * max(2.5, MIDLINE_BESIDE[1] * b))
    rows = np.flatnonzero(np.abs(vs) <= MIDLINE_REACH * b)
    rows = rows[(rows - far >= 0) & (rows + far < len(vs))]
    uu, vv = np.meshgrid(us, vs)
    best = -math.inf
    for tilt in range(-MIDLINE_TILT, MIDLINE_TILT + 1, MIDLINE_TILT_STEP):
        t, tt = math.radians(phi + tilt), math.radians(tilt)
        mx = (cx + uu * math.cos(t) - vv * math.sin(t)).astype(np.float32)
        my = (cy + uu * math.sin(t) + vv * math.cos(t)).astype(np.float32)
        level = cv2.remap(g, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        seen = cv2.remap(seen_img, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
        # inside 0.85 of the ellipse (in its own axes), in the image and the field of view
        eu, ev = uu * math.cos(tt) - vv * math.sin(tt), uu * math.sin(tt) + vv * math.cos(tt)
        seen &= np.hypot(eu / a, ev / b) < 0.85
        # each chord's mean grey over each piece; a piece of a chord less than half seen is not read
        count = np.add.reduceat(seen.astype(np.float32), starts, axis=1)
        known = count >= np.maximum(2.0, 0.5 * widths)
        means = np.where(known, np.add.reduceat(np.where(seen, level, 0.0), starts, axis=1) / np.maximum(count, 1.0),
                         0.0)
        # the typical chord and the spread of the chords' means, piece by piece (a piece read on
        # under 3 chords is not read)
        chords = np.where(known, means, np.nan)
        typical = _column_medians(chords)
        spread = np.maximum(1.4826 * _column_medians(np.abs(chords - typical)), 1.0)
        typical[known.sum(axis=0) < 3] = np.nan
        if len(rows) == 0:
            continue
        # the mean of the chords beside each candidate row, on either side (running sums over rows)
        total = np.vstack([np.zeros((1, n)), np.cumsum(means, axis=0)])
        seen_rows = np.vstack([np.zeros((1, n)), np.cumsum(known, axis=0)])
        beside = []
        for lo, hi in ((rows - far, rows - near + 1), (rows + near, rows + far + 1)):
            k_count = seen_rows[hi] - seen_rows[lo]
            beside.append(np.where(k_count > 0, (total[hi] - total[lo]) / np.maximum(k_count, 1.0), np.nan))
        # ahead of the brighter side and of the inside's typical chord: a strip of tissue between two
        # shadows is brighter than the shadows beside it only
        lead = (means[rows] - np.maximum(np.maximum(*beside), typical)) / spread
        lead = np.where(known[rows] & np.isfinite(lead), lead, -np.inf)
        best = max(best, float(np.sort(lead, axis=1)[:, n - MIDLINE_BRIGHT].max()))
    return best


def _column_medians(values: np.ndarray) -> np.ndarray:
    """The median of each column of ``values`` over its numbers (NaN: none there), NaN for a column
    of none (np.nanmedian, without its cost on small arrays)."""
    ordered = np.sort(values, axis=0)  # (NaN sorts last)
    count = np.isfinite(values).sum(axis=0)
    cols = np.arange(values.shape[1])
    low = ordered[np.maximum(count - 1, 0) // 2, cols]  # the middle one, or the two middle ones
    high = ordered[np.minimum(count // 2, len(values) - 1), cols]
    return np.where(count > 0, (low + high) / 2.0, np.nan)


def heart_chambers(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> bool:
    """Whether a fitted ellipse holds a dark structure divided by bright walls into chambers, as
    the heart in a section of the thorax is (:data:`CHAMBER_REASON`), on the frame's grey levels
    ``grey`` (the mask's size; ``fov`` bool or None): :data:`CHAMBER_COUNT` or more compact dark
    pieces of like size, side by side, at :data:`CHAMBER_SIGMA`'s smoothing or at any of the finer
    one's :data:`CHAMBER_FINE_DEPTHS`. False when too little of the inside lies in the image and
    the field of view to tell."""
    box = _ellipse_box(grey, fov, ellipse, smallest=8.0, room=16)
    if box is None:
        return False
    crop, seen, _, _, rho, a, b = box
    m = min(a, b)
    inside = (rho < CHAMBER_REACH) & seen
    if inside.sum() < 0.8 * (rho < CHAMBER_REACH).sum():
        return False
    readings = ((CHAMBER_SIGMA, ((CHAMBER_DARK, CHAMBER_DARK_RATIO),)), (CHAMBER_FINE_SIGMA, CHAMBER_FINE_DEPTHS))
    for share, depths in readings:
        sigma = max(1.0, share * m)
        smooth = cv2.GaussianBlur(crop, (0, 0), sigma)
        level = float(np.median(smooth[inside]))
        # the speckle's spread at this smoothing: what a wider blur leaves (the heart, the stomach
        # and shadows are wider than that, so they leave little of it)
        rest = smooth - cv2.GaussianBlur(smooth, (0, 0), 4 * sigma)
        spread = 1.4826 * float(np.median(np.abs(rest[inside])))
        first = None  # the dark pixels at this smoothing's first depth
        for k, ratio in depths:
            dark = inside & (smooth < min(level - k * spread, ratio * level))
            if first is None:
                first = dark
            if _chambered(dark, first, a, b, smooth, inside):
                return True
    return False


def _chambered(dark: np.ndarray, first: np.ndarray, a: float, b: float, smooth: np.ndarray,
                inside: np.ndarray) -> bool:
    """Whether the dark pixels ``dark`` (inside an ellipse of semi-axes ``a``, ``b``) form
    :data:`CHAMBER_COUNT` or more compact, solid pieces of like size in one structure
    (:func:`heart_chambers`); ``first``: the dark pixels at the shallowest depth read, which
    ``dark`` lies in; ``smooth``: the grey levels read and ``inside`` the pixels read (pieces in a
    shadow, :func:`_shadowed`, do not count)."""
    m = min(a, b)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
    area = math.pi * a * b
    _, wide = cv2.connectedComponents(first.astype(np.uint8), connectivity=8)
    keep = []
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < max(CHAMBER_MIN * area, 6):
            continue
        ys, xs = np.nonzero(lab == k)
        around = wide == wide[ys[0], xs[0]]
        if (dark & around).sum() < CHAMBER_FILL * around.sum():
            continue
        pts = np.column_stack(np.nonzero(lab == k)).astype(np.float64)
        low, high = np.linalg.eigvalsh(np.cov(pts.T))
        if math.sqrt(max(low, 0.0) / max(high, 1e-9)) < CHAMBER_ROUND:
            continue
        # and solid: a chamber is a smooth-walled cavity; a dim stretch of tissue (a shadow's
        # edge) crosses the threshold in ragged pieces
        outline = max(cv2.findContours((lab == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)[0], key=len)
        if stats[k, cv2.CC_STAT_AREA] < CHAMBER_SOLID * max(cv2.contourArea(cv2.convexHull(outline)), 1.0):
            continue
        if not _shadowed(lab == k, smooth, inside, m):
            keep.append(k)
    if len(keep) < CHAMBER_COUNT:
        return False
    reach = max(1, int(round(CHAMBER_WALL * m)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    joined = cv2.morphologyEx(np.isin(lab, keep).astype(np.uint8), cv2.MORPH_CLOSE, disc)
    _, group = cv2.connectedComponents(joined, connectivity=8)
    structures: dict[int, list[int]] = {}
    for k in keep:
        ys, xs = np.nonzero(lab == k)
        structures.setdefault(int(group[ys[0], xs[0]]), []).append(int(stats[k, cv2.CC_STAT_AREA]))
    for sizes in structures.values():
        if sum(1 for s in sizes if s >= CHAMBER_SIMILAR * max(sizes)) >= CHAMBER_COUNT:
            return True
    return False


def _shadowed(piece: np.ndarray, smooth: np.ndarray, inside: np.ndarray, m: float) -> bool:
    """Whether a dark piece (bool, in the box of ``smooth``'s grey levels; ``inside`` the pixels
    read, ``m`` the smaller semi-axis) is a darker core of an acoustic shadow, not a chamber
    (:data:`CHAMBER_SHADOW`): the grey straight down the beam from it to the inside's end (or up
    to its top, where too little lies below) is dark against the bands either side over the same
    rows, and the piece is hardly darker than that shadow (grey levels above the inside's darkest,
    :data:`CHAMBER_SHADOW_FLOOR`)."""
    ys, xs = np.nonzero(piece)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    rows = np.arange(smooth.shape[0])[:, None] > y1
    cols = np.arange(smooth.shape[1])[None, :]
    below = rows & inside & (cols >= x0) & (cols <= x1)
    if below.sum() < CHAMBER_SHADOW_MIN * m * (x1 - x0 + 1):
        rows = np.arange(smooth.shape[0])[:, None] < y0
        below = rows & inside & (cols >= x0) & (cols <= x1)
    gap, width = CHAMBER_SHADOW_GAP * m, CHAMBER_SHADOW_WIDTH * m
    left = (cols < x0 - gap) & (cols >= x0 - gap - width)
    right = (cols > x1 + gap) & (cols <= x1 + gap + width)
    beside = rows & inside & (left | right)
    if below.sum() < CHAMBER_SHADOW_MIN * m * (x1 - x0 + 1) or beside.sum() < 6:
        return False
    floor = float(np.percentile(smooth[inside], CHAMBER_SHADOW_FLOOR))
    shade = float(smooth[below].mean()) - floor
    return (shade <= CHAMBER_SHADOW * (float(smooth[beside].mean()) - floor)
            and float(smooth[piece].mean()) - floor >= CHAMBER_SHADOW_CORE * shade)


def rib_ring(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> bool:
    """Whether bright echoes with shadows lie all round a fitted ellipse just inside it, as a
    thorax's ribs do (:data:`RIB_REASON`), on the frame's grey levels ``grey`` (the mask's size;
    ``fov`` bool or None): :data:`RIB_COUNT` or more echoes in the band :data:`RIB_BAND`, no two
    neighbours more than :data:`RIB_GAP` degrees apart. False when the ellipse is too small in
    pixels to tell a rib from speckle (:data:`RIB_MIN_AXIS`) or too little of the band lies in the
    image and the field of view."""
    (cx, cy), (w, h), angle = ellipse
    # the box of the ellipse enlarged to where shadows are read (a shadow under a rib on the far
    # side falls past the outline)
    box = _ellipse_box(grey, fov, ((cx, cy), (w * RIB_SHADOW_REACH, h * RIB_SHADOW_REACH), angle),
                       smallest=RIB_MIN_AXIS * RIB_SHADOW_REACH, room=16)
    if box is None:
        return False
    crop, seen, xx, yy, rho, a, b = box
    rho, a, b = rho * RIB_SHADOW_REACH, a / RIB_SHADOW_REACH, b / RIB_SHADOW_REACH
    m = min(a, b)
    smooth = cv2.GaussianBlur(crop, (0, 0), max(1.0, RIB_SIGMA * m))
    r = max(1, int(round(RIB_OPEN * m)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    lift = smooth - cv2.morphologyEx(smooth, cv2.MORPH_OPEN, disc)  # what stands out of its surround
    band = (rho >= RIB_BAND[0]) & (rho <= RIB_BAND[1])
    inner = (rho < RIB_INNER) & seen
    if (band & seen).sum() < 0.5 * band.sum() or inner.sum() < 50:
        return False
    level = float(np.median(lift[inner]))
    spread = 1.4826 * float(np.median(np.abs(lift[inner] - level)))
    bright = band & seen & (lift > level + RIB_BRIGHT * max(spread, 1.0))
    n, _, stats, centres = cv2.connectedComponentsWithStats(bright.astype(np.uint8), connectivity=8)
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    rows = np.arange(smooth.shape[0])[:, None]
    cols = np.arange(smooth.shape[1])[None, :]
    near = seen & (rho < RIB_SHADOW_REACH)
    found = []
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < max(4.0, RIB_MIN_PIECE * math.pi * a * b):
            continue
        if max(stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT]) > RIB_LENGTH * m:
            continue  # a stretch of the skin's line, not a rib's short section
        x0 = int(stats[k, cv2.CC_STAT_LEFT])  # (its box, as the components' statistics give it)
        x1 = x0 + int(stats[k, cv2.CC_STAT_WIDTH]) - 1
        y1 = int(stats[k, cv2.CC_STAT_TOP]) + int(stats[k, cv2.CC_STAT_HEIGHT]) - 1
        # its shadow: straight below it (the beam runs down the frame), against the brighter side
        depth = (rows > y1) & (rows <= y1 + RIB_SHADOW_DEPTH * m) & near
        below = depth & (cols >= x0) & (cols <= x1)
        gap, width = RIB_SHADOW_GAP * m, RIB_SHADOW_WIDTH * m
        sides = [depth & (cols >= lo) & (cols <= hi)
                 for lo, hi in ((x0 - gap - width, x0 - gap), (x1 + gap, x1 + gap + width))]
        sides = [float(smooth[s].mean()) for s in sides if s.sum() >= 6]
        if below.sum() < 6 or not sides:
            continue
        if float(smooth[below].mean()) > RIB_SHADOW * max(max(sides), 4.0):
            continue
        dx, dy = centres[k][0] + xx[0, 0] - cx, centres[k][1] + yy[0, 0] - cy
        found.append(math.degrees(math.atan2((-dx * sa + dy * ca) / b, (dx * ca + dy * sa) / a)) % 360.0)
    echoes: list[float] = []
    for t in sorted(found):  # echoes closer than RIB_APART are one (a rib or the spine in pieces)
        if not echoes or t - echoes[-1] >= RIB_APART:
            echoes.append(t)
    if len(echoes) > 1 and echoes[0] + 360.0 - echoes[-1] < RIB_APART:
        echoes.pop()
    if len(echoes) < RIB_COUNT:
        return False
    return float(np.diff(echoes + [echoes[0] + 360.0]).max()) <= RIB_GAP


def edge_offset(grey: np.ndarray, fov: np.ndarray | None, ellipse: tuple) -> str:
    """Where the body's own edge lies against a fitted ellipse, on the frame's grey levels
    ``grey`` (the mask's size; ``fov`` bool or None): ``"inside"`` when the outline lies inside the
    body (the strongest bright-to-dark step outwards lies beyond :data:`EDGE_NEAR` in
    :data:`OFF_EDGE_SHARE` of the sectors that have one), ``"outside"`` when it lies outside it,
    ``""`` when on it, ``"unverified"`` when too few sectors show a clear step: an abdomen packed
    in tissue of its own grey (little or no fluid around it) shows no edge to check the outline
    against, and a mask 20-40 % inside or outside the body read a plain AC and GA there, as
    one on it does. Each sector's profile is the mean over
    its angles, so speckle averages out; each step compares the mean grey over
    :data:`EDGE_STEP_HALF` of the size just inside a scale with that just outside it, and counts
    only where it is :data:`EDGE_SHARPNESS` times what the grey goes on changing beyond those
    windows (a fading far field is a slope, not an edge). Steps on both sides of the outline in
    :data:`CONTRARY_SHARE` of the sectors each, or scattered wider than :data:`EDGE_SPREAD`, leave
    it ``"unverified"``: no one edge is seen."""
    per, step = 8, 0.025
    sample = _band_sampler(grey, fov, ellipse, EDGE_SECTORS * per)
    if sample is None:
        return ""
    lo, hi = EDGE_SEARCH[0] - EDGE_STEP_HALF, EDGE_SEARCH[1] + EDGE_STEP_HALF
    n = int(round((hi - lo) / step)) + 1
    values, ok = sample(lo, hi, n)
    scales = np.linspace(lo, hi, n)
    v = values.reshape(n, EDGE_SECTORS, per).astype(np.float64)
    ok = ok.reshape(n, EDGE_SECTORS, per)
    counts = ok.sum(axis=2)
    profile = np.where(counts > 0, (v * ok).sum(axis=2) / np.maximum(counts, 1), np.nan)  # (n, sectors)
    k = int(round(EDGE_STEP_HALF / step))
    # running means of k samples just inside and just outside every scale i (k <= i < n - k)
    csum = np.vstack([np.zeros((1, EDGE_SECTORS)), np.cumsum(np.nan_to_num(profile), axis=0)])
    cnan = np.vstack([np.zeros((1, EDGE_SECTORS)), np.cumsum(np.isnan(profile), axis=0)])
    i = np.arange(k, n - k)
    inner = (csum[i] - csum[i - k]) / k
    outer = (csum[i + 1 + k] - csum[i + 1]) / k
    whole = ((cnan[i] - cnan[i - k]) == 0) & ((cnan[i + 1 + k] - cnan[i + 1]) == 0)
    fall = (inner - outer) / np.maximum((inner + outer) / 2.0, 8.0)  # outwards; a rise is its negative
    # an edge is a step, not a slope: the grey must change across it more than it goes on changing
    # the same way within the next windows further in and further out. The far field of a fan fading
    # to black dims the body's far half smoothly; its steepest fall relative to the dimming grey lay
    # ~20 % inside the body, and a whole, exactly outlined abdomen read "outside the body's edge"
    def beside(lo: np.ndarray, hi: np.ndarray, own: np.ndarray) -> np.ndarray:
        # the mean of samples [lo, hi) where they lie in the profile with none missing, else ``own``
        ok = ((lo >= 0) & (hi <= n))[:, None]
        lo, hi = np.clip(lo, 0, n), np.clip(hi, 0, n)
        ok = ok & ((cnan[hi] - cnan[lo]) == 0)
        return np.where(ok, (csum[hi] - csum[lo]) / k, own)

    further_in, further_out = beside(i - 2 * k, i - k, inner), beside(i + 1 + k, i + 1 + 2 * k, outer)
    way = np.sign(inner - outer)
    slope = np.maximum(np.maximum((further_in - inner) * way, (outer - further_out) * way), 0.0)
    sharp = np.abs(inner - outer) >= EDGE_SHARPNESS * slope
    d = np.where(whole & sharp, fall, -np.inf)
    best = d.max(axis=0)
    at = d.argmax(axis=0)
    where = scales[i][at]
    clear = best >= MIN_EDGE_STEP
    # a sector whose grey rises outwards between the outline and that step shows the body against
    # something brighter (the placenta, the wall): the step is that layer's far side, not the body's
    # edge (a whole abdomen against a bright placenta over half its outline read "inside", the AC short)
    rise = np.where(whole, -fall, -np.inf)
    past = (scales[i][:, None] >= EDGE_NEAR[0]) & (np.arange(len(i))[:, None] < at[None, :])
    brighter = np.where(past, rise, -np.inf).max(axis=0) >= MIN_EDGE_STEP
    beyond = where > EDGE_NEAR[1]
    counted = clear & ~(beyond & brighter)  # (such a sector votes neither way)
    if counted.sum() < MIN_STEP_SECTORS:
        return "unverified"
    out, short = float(np.mean(beyond[counted])), float(np.mean(where[clear] < EDGE_NEAR[0]))
    spread = float(np.subtract(*np.percentile(where[counted], [75, 25])))
    if min(out, short) >= CONTRARY_SHARE or spread > EDGE_SPREAD:
        return "unverified"
    if out >= OFF_EDGE_SHARE:
        return "inside"
    if short >= OFF_EDGE_SHARE:
        return "outside"
    return ""


@dataclass(frozen=True)
class Choice:
    """The frame choice of one case. ``frame``: the case's frame or -1; ``per_sweep``: the same
    choice inside each sweep (-1 where none); ``runs``: ``(start, stop, strength)`` per sweep,
    strongest first; ``basis``: ``"all models"``, ``"segmenter"``, ``"classifier"`` (only one
    model supported any frame) or ``"none"``; ``shapes``: per frame, or None when no segmenter."""

    frame: int
    per_sweep: list[int]
    runs: list[list[tuple[int, int, float]]]
    evidence: np.ndarray
    positive: np.ndarray
    basis: str
    shapes: list[MaskShape] | None


def _smooth(v: np.ndarray, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    from fetaliqa_core.analysis.assessment import smooth_curve

    return smooth_curve(v, ranges, SMOOTH_WINDOW)


def close_gaps(flags: np.ndarray, gap: int = 1) -> np.ndarray:
    """``flags`` with every stretch of at most ``gap`` unflagged frames between two flagged ones set
    (a copy): the frame choice's runs close gaps of :data:`RUN_GAP` frames, the cascade's wider ones."""
    out = np.asarray(flags, dtype=bool).copy()
    on = np.flatnonzero(out)
    for a, b in zip(on[:-1], on[1:]):
        if 1 < b - a <= gap + 1:
            out[a:b] = True
    return out


#: Gaps of up to this many frames inside a run of positive frames are closed: a blind sweep moves
#: about a millimetre a frame, and an abdomen's run split by two borderline masks (fit IoU 0.74
#: against the 0.75 limit) lost its sweep to a thorax's run that was longer than either piece.
RUN_GAP = 2


def _runs(positive: np.ndarray, start: int, stop: int) -> list[tuple[int, int]]:
    """Maximal runs ``[a, b)`` of positive frames in ``[start, stop)``, gaps of up to
    :data:`RUN_GAP` frames closed."""
    pos = close_gaps(positive[start:stop], RUN_GAP)
    out: list[tuple[int, int]] = []
    i = 0
    while i < pos.size:
        if pos[i]:
            j = i
            while j < pos.size and pos[j]:
                j += 1
            out.append((start + i, start + j))
            i = j
        else:
            i += 1
    return out


def choose(
    sweep_ranges: Sequence[tuple[int, int]],
    p_cls: np.ndarray | None = None,
    threshold_cls: float = 0.5,
    shapes: list[MaskShape] | None = None,
    p_opt: np.ndarray | None = None,
    seg_call: np.ndarray | None = None,
) -> Choice:
    """The sweep-first choice (see the module's text). ``p_cls``: ``(N,)`` NaN where unscored
    (None: no classifier). ``shapes``: :func:`mask_shape` per frame (None: no segmenter; an
    unscored frame has :data:`NO_MASK`). ``p_opt``: optimal share of each mask (NaN: unknown).
    ``seg_call``: the segmenter's own call per frame (the paper's rule, mask >= 1 % of the model
    input); a mask counts for a frame only where the segmenter calls it (None: every mask)."""
    if p_cls is None and shapes is None:
        raise ValueError("frame choice needs a classifier or a segmenter")
    n = len(shapes) if shapes is not None else int(np.asarray(p_cls).shape[0])
    if shapes is not None:
        shapes = _beside_skulls(shapes, sweep_ranges)
    pc = None if p_cls is None else np.asarray(p_cls, np.float64).reshape(-1)
    q = None if shapes is None else np.array([s.quality for s in shapes])
    plaus = None if shapes is None else np.array([s.plausible for s in shapes])
    if plaus is not None and seg_call is not None:
        called = np.asarray(seg_call, dtype=bool).reshape(-1)
        plaus = plaus & called  # a mask the segmenter itself does not call is no evidence of it
        q = np.where(called, q, 0.0)
    cls_call = None if pc is None else np.isfinite(pc) & (np.nan_to_num(pc, nan=-1.0) >= threshold_cls)
    if pc is not None and q is not None:
        v = np.where(np.isfinite(pc), pc, np.nan) * q
        positive, basis = cls_call & plaus, "all models"
        if not positive.any():
            positive, basis = plaus.copy(), "segmenter"
            v = q.astype(np.float64)
        if not positive.any():
            positive, basis = cls_call.copy(), "classifier"
            v = pc.copy()
    elif pc is not None:
        v, positive, basis = pc.copy(), cls_call.copy(), "classifier"
    else:
        v, positive, basis = q.astype(np.float64), plaus.copy(), "segmenter"
    smooth = _smooth(v, sweep_ranges)
    smooth = np.where(np.isfinite(smooth), smooth, 0.0)
    opt = np.zeros(n, bool) if p_opt is None else np.nan_to_num(np.asarray(p_opt, np.float64), nan=0.0) >= OPTIMAL_SHARE

    def best_in(a: int, b: int) -> int:
        idx = np.arange(a, b)
        if positive[idx].any():  # not a closed gap: a frame the models themselves call
            idx = idx[positive[idx]]
        if shapes is not None and plaus[idx].any():
            idx = idx[plaus[idx]]
            size = np.array([shapes[i].ellipse_area_px * shapes[i].quality for i in idx])
            # optimal first, then round ones: an oblique section is larger than the transverse one
            oval = np.array([shapes[i].oval for i in idx])
            order = np.lexsort((idx, -size, oval, ~opt[idx]))
        else:
            raw = np.nan_to_num(v[idx], nan=-1.0)
            order = np.lexsort((idx, -smooth[idx], -raw))
        return int(idx[order[0]])

    runs: list[list[tuple[int, int, float]]] = []
    per_sweep: list[int] = []
    best_case: tuple[float, int] | None = None
    for start, stop in sweep_ranges:
        # a run's strength is its positive frames' evidence: a closed gap joins two pieces but adds
        # nothing (with gaps of two closed, a thorax's two pieces outweighed the abdomen's run)
        found = [(a, b, float(smooth[a:b][positive[a:b]].sum())) for a, b in _runs(positive, start, stop)]
        found.sort(key=lambda r: (-r[2], r[0]))
        runs.append(found)
        if not found:
            per_sweep.append(-1)
            continue
        frame = best_in(found[0][0], found[0][1])
        per_sweep.append(frame)
        if best_case is None or found[0][2] > best_case[0]:
            best_case = (found[0][2], frame)
    if best_case is None:
        basis = "none"
    return Choice(frame=-1 if best_case is None else best_case[1], per_sweep=per_sweep, runs=runs,
                  evidence=smooth, positive=positive, basis=basis, shapes=shapes)


def _beside_skulls(shapes: list[MaskShape], sweep_ranges: Sequence[tuple[int, int]],
                   reach: int = SKULL_REACH) -> list[MaskShape]:
    """``shapes`` with a plausible outline judged a head's too (:data:`BESIDE_SKULL_REASON`) where,
    within ``reach`` frames of it in the same sweep, more outlines at the same place (centres closer
    than the larger's half-length) are skulls' (a bright ring, or the midline echo) than plausible ones: one frame judged a skull in a
    run of abdomens is the exception there, and a twin's head beside the other's abdomen lies
    elsewhere in the image."""
    skull = [s.reason in (SKULL_REASON, MIDLINE_REASON) and s.ellipse is not None for s in shapes]
    if not any(skull):
        return shapes

    def same_place(a: MaskShape, b: MaskShape) -> bool:
        (ax, ay), (aw, ah), _ = a.ellipse
        (bx, by), (bw, bh), _ = b.ellipse
        return math.hypot(ax - bx, ay - by) < max(aw, ah, bw, bh) / 2

    out = list(shapes)
    for start, stop in sweep_ranges:
        for i in range(start, stop):
            here = shapes[i]
            if not here.plausible or here.ellipse is None:
                continue
            near = [j for j in range(max(start, i - reach), min(stop, i + reach + 1))
                    if j != i and shapes[j].ellipse is not None and same_place(here, shapes[j])]
            skulls = sum(1 for j in near if skull[j])
            if skulls and skulls > sum(1 for j in near if shapes[j].plausible):
                out[i] = replace(here, plausible=False, quality=0.0, reason=BESIDE_SKULL_REASON)
    return out


def baseline_choice(labels_area_opt: np.ndarray, labels_area_sub: np.ndarray) -> int:
    """The challenge baseline's rule: the frame with the largest predicted optimal (label 1)
    area, else the largest suboptimal (label 2) area, -1 when no frame has a mask."""
    opt = np.nan_to_num(np.asarray(labels_area_opt, np.float64), nan=0.0)
    sub = np.nan_to_num(np.asarray(labels_area_sub, np.float64), nan=0.0)
    if opt.max(initial=0.0) > 0:
        return int(np.argmax(opt))
    if sub.max(initial=0.0) > 0:
        return int(np.argmax(sub))
    return -1
