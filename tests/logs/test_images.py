"""Camera images read lazily: a reduced health view at once (the decodability check), the full image on demand."""

import io

import numpy as np
import pytest
from PIL import Image

from labeler.errors import InputError
from labeler.geometry.camera import CameraCalib
from labeler.logs.images import HEALTH_WIDTH, EncodedImage, LazyImages
from labeler.logs.native import NativeLogWriter, load_frame, read_log_index
from tests.logs.test_native import make_log


def _jpeg(img: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=90) if fmt == "JPEG" else Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def _scene(h=360, w=640, seed=0) -> np.ndarray:
    """A smooth gradient with some sharp-edged blocks: a picture with both flat areas and edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 200 / w + 20, y * 200 / h + 20, np.full((h, w), 90.0)], axis=2)
    for _ in range(40):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        img[y0:y0 + rng.integers(8, 40), x0:x0 + rng.integers(8, 40)] = rng.uniform(0, 255, 3)
    return img.astype(np.uint8)


def test_jpeg_health_view_without_full_decode():
    img = _scene()
    e = EncodedImage(_jpeg(img), "cam.jpg", 7)
    assert e.size == (640, 360) and e.shape == (360, 640, 3) and not e.decoded
    assert e.view.shape == (180, HEALTH_WIDTH, 3) and e.view.dtype == np.uint8
    assert abs(float(e.view.mean()) - float(img.mean())) < 1.0  # the mean survives the reduced decode
    lazy = LazyImages({"front": e})
    assert lazy.health_views()["front"] is e.view and lazy.num_decoded() == 0
    assert sorted(lazy) == ["front"] and len(lazy) == 1 and "front" in lazy and lazy.size("front") == (640, 360)
    full = lazy["front"]  # first access decodes once ...
    assert full.shape == (360, 640, 3) and lazy.num_decoded() == 1
    assert lazy["front"] is full  # ... and keeps it
    assert np.abs(full.astype(int) - img).mean() < 8  # JPEG tolerance


def test_png_and_small_images_are_decoded_once_in_full():
    img = _scene(375, 1242)
    e = EncodedImage(_jpeg(img, "PNG"), "cam.png", None)
    assert e.decoded and np.array_equal(e.full(), img)  # lossless, no reduced decode: kept
    assert e.view.shape[1] == HEALTH_WIDTH
    small = EncodedImage(_jpeg(_scene(120, 200)), "small.jpg", None)  # narrower than the health view
    assert small.view.shape == (120, 200, 3) and small.decoded


@pytest.mark.parametrize("raw", [b"\xff\xd8\xff not a jpeg", None])
def test_corrupt_or_truncated_image_fails_when_read(raw):
    good = _jpeg(_scene())
    raw = raw if raw is not None else good[: len(good) // 2]
    with pytest.raises(InputError) as e:
        EncodedImage(raw, "cam/front/1.jpg", 1_000)
    assert e.value.what == "corrupt_image" and e.value.file == "cam/front/1.jpg" and e.value.frame == 1_000


def _wide_log(root, n=3):
    cams = {"front": CameraCalib("front", np.array([[500.0, 0, 320], [0, 500.0, 180], [0, 0, 1]]), np.eye(4), 640, 360)}
    w = NativeLogWriter(str(root), "wide", cams)
    for i in range(n):
        w.add_frame(i * 100_000_000, np.ones((10, 4), np.float32), np.eye(4), {"front": _scene(seed=i)})
    for k, i in enumerate([2, 0, 2, 1, 2]):  # several boxes per sweep, rows not in time order
        w.add_annotations(i * 100_000_000, np.full((1, 7), float(k)), [f"c{k}"], [f"t{k}"])
    return w.close()


def test_native_load_frame_is_lazy(tmp_path):
    idx = read_log_index(_wide_log(tmp_path))
    f = load_frame(idx, 1)
    assert isinstance(f.images, LazyImages) and f.images.num_decoded() == 0
    views = f.images.health_views()
    assert views["front"].shape == (180, HEALTH_WIDTH, 3) and f.images.num_decoded() == 0
    assert f.images["front"].shape == (360, 640, 3) and f.images.num_decoded() == 1
    assert load_frame(idx, 1, with_images=False).images == {}
    # a log whose images are no wider than the health view: the view is the full image, decoded once
    small = load_frame(read_log_index(make_log(tmp_path / "small", n=2)), 1)
    assert small.images.num_decoded() == 1 and small.images.health_views()["front"].shape == (180, 320, 3)


@pytest.mark.parametrize("wide", [False, True])
def test_native_ground_truth_is_per_frame(tmp_path, wide):
    idx = read_log_index(_wide_log(tmp_path) if wide else make_log(tmp_path, n=6))
    # the grouped lookup returns exactly the rows of that timestamp, in file order
    a = idx.annotations
    for i in range(len(idx)):
        g = load_frame(idx, i, with_images=False)
        rows = [r for r in a.to_pylist() if r["timestamp_ns"] == int(idx.timestamps_ns[i])]
        np.testing.assert_array_equal(g.gt_boxes, [[r[c] for c in ("x", "y", "z", "l", "w", "h", "yaw")] for r in rows])
        assert list(g.gt_categories) == [r["category"] for r in rows] and list(g.gt_track_ids) == [r["track_id"] for r in rows]
    if wide:
        assert list(load_frame(idx, 2, with_images=False).gt_track_ids) == ["t0", "t2", "t4"]
