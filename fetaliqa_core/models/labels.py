"""What a segmenter's output means, without the models themselves (no torch): the engine, the
viewer and reports read these, and the viewer's window opens before torch is imported."""

#: A frame is called "good" by the segmenter when at least this fraction of the model's pixels
#: (224*224 -> 502 px) is foreground with probability above PIXEL_THRESHOLD. The paper's rule:
#: a few stray pixels are noise, an abdomen at the scanning depth covers far more than 1 %.
MASK_AREA_FRACTION = 0.01
PIXEL_THRESHOLD = 0.5
#: Mask labels: the plane graded optimal or suboptimal (3-class segmenter), or abdomen (binary).
LABEL_OPTIMAL, LABEL_SUBOPTIMAL, LABEL_ABDOMEN = 1, 2, 3
