"""The object classes labeler knows, with typical sizes (metres). One place to grep."""

from __future__ import annotations

# classes the detectors predict and Label Studio offers, in this order
CLASSES: tuple[str, ...] = ("car", "truck", "bus", "pedestrian", "cyclist", "traffic_cone")

# classes that exist in the world (and in simulated ground truth) but are rare: any box of these is a corner case
RARE_CLASSES: tuple[str, ...] = ("animal",)

# typical (length, width, height) in metres and a relative spread, used by the simulator and the class guess
TYPICAL_SIZE_M: dict[str, tuple[float, float, float]] = {
    "car": (4.5, 1.85, 1.6),
    "truck": (8.0, 2.5, 3.2),
    "bus": (11.5, 2.6, 3.3),
    "pedestrian": (0.6, 0.6, 1.75),
    "cyclist": (1.8, 0.65, 1.7),
    "traffic_cone": (0.4, 0.4, 0.75),
    "animal": (1.2, 0.5, 0.9),
}

# RGB colour per class for renders (BEV and camera)
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "car": (66, 135, 245),
    "truck": (245, 166, 35),
    "bus": (230, 70, 70),
    "pedestrian": (60, 200, 90),
    "cyclist": (180, 90, 220),
    "traffic_cone": (255, 120, 0),
    "animal": (140, 100, 60),
}
