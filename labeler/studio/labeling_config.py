"""The Label Studio labeling config (XML) for reviewing one frame: a rotated-box BEV view plus camera views.

Names used in results (the converter and the push code rely on them):

* ``bev_box`` (RectangleLabels, rotatable) on image ``bev`` (task data ``$bev``);
* ``z_m`` and ``height_m`` (Number, per region, ``step="any"``) on ``bev``: box centre z and height, metres;
* ``box_<camera>`` (RectangleLabels, no rotation) on image ``cam_<camera>`` (task data ``$cam_<camera>``);
* ``verdict`` (Choices on ``bev``): ``ok`` / ``needs_fix`` / ``bad_frame`` for the whole frame.

Task data also needs ``frame_key``, ``priority`` and ``reasons`` (shown in headers).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from labeler.errors import StudioError

BEV_IMAGE = "bev"
BEV_BOX = "bev_box"
Z_NUMBER = "z_m"
HEIGHT_NUMBER = "height_m"
VERDICT = "verdict"
VERDICT_CHOICES = ("ok", "needs_fix", "bad_frame")

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


def camera_image_name(camera: str) -> str:
    """Image tag name and task data key of a camera: ``cam_<camera>``."""
    return f"cam_{camera}"


def camera_box_name(camera: str) -> str:
    """RectangleLabels tag name of a camera: ``box_<camera>``."""
    return f"box_{camera}"


def build_labeling_config(classes: list[str], cameras: list[str]) -> str:
    """Labeling config XML for the given class labels and camera names.

    Camera names must match ``[A-Za-z0-9_]+`` (they become tag names and task data keys); class labels may be any
    non-empty text (escaped). Raises StudioError on an invalid or duplicate name.
    """
    if not classes or any(not str(c).strip() for c in classes) or len(set(classes)) != len(classes):
        raise StudioError(f"classes must be non-empty and unique, got {classes!r}")
    bad = [c for c in cameras if not _NAME_RE.match(c)]
    if bad or len(set(cameras)) != len(cameras):
        raise StudioError(f"camera names must be unique and match [A-Za-z0-9_]+, got {cameras!r}")

    root = ET.Element("View")
    head = ET.SubElement(root, "View", style="display: flex; gap: 1em; align-items: baseline")
    ET.SubElement(head, "Header", value="$frame_key", size="4")
    ET.SubElement(head, "Header", value="priority $priority", size="5")
    ET.SubElement(root, "Header", value="$reasons", size="6")

    ET.SubElement(root, "Choices", name=VERDICT, toName=BEV_IMAGE, choice="single", showInline="true")
    for v in VERDICT_CHOICES:
        ET.SubElement(root[-1], "Choice", value=v)

    ET.SubElement(root, "Header", value="Bird's-eye view (forward = up)", size="6")
    ET.SubElement(root, "Image", name=BEV_IMAGE, value=f"${BEV_IMAGE}", zoom="true", zoomControl="true")
    rl = ET.SubElement(root, "RectangleLabels", name=BEV_BOX, toName=BEV_IMAGE, canRotate="true", strokeWidth="2")
    for c in classes:
        ET.SubElement(rl, "Label", value=str(c))
    per_region = ET.SubElement(root, "View", visibleWhen="region-selected", whenTagName=BEV_BOX)
    ET.SubElement(per_region, "Header", value="box centre z (m) and height (m)", size="6")
    for name in (Z_NUMBER, HEIGHT_NUMBER):
        ET.SubElement(per_region, "Number", name=name, toName=BEV_IMAGE, perRegion="true", step="any")

    for cam in cameras:
        img = camera_image_name(cam)
        ET.SubElement(root, "Header", value=f"Camera {cam}", size="6")
        ET.SubElement(root, "Image", name=img, value=f"${img}", zoom="true")
        rl = ET.SubElement(root, "RectangleLabels", name=camera_box_name(cam), toName=img, canRotate="false", strokeWidth="2")
        for c in classes:
            ET.SubElement(rl, "Label", value=str(c))

    ET.indent(root)
    return ET.tostring(root, encoding="unicode")
