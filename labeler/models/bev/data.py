"""Training / evaluation samples from native logs (ground truth from ``annotations.parquet``).

A sample is one LiDAR sweep (N, 4) float32 and its GT boxes (M, 7) with class indices into the model's classes
(-1 for other categories, e.g. the rare ``animal``, and for boxes without any LiDAR point: those teach the model to
hallucinate and the evaluation ignores them). Augmentation (training only) is a deterministic function of
``(seed, epoch, sample index)``: copy-paste of rare objects (:class:`ObjectBank`, CenterPoint / SECOND's
"GT sampling"), random x / y mirror, rotation about z, global scaling, point dropout and a random translation
(training runs on a smaller grid than inference: a random crop of the sweep, 4x cheaper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labeler.geometry.boxes import bev_iou, points_in_boxes
from labeler.logs.native import load_frame, read_log_index


@dataclass(frozen=True)
class Augment:
    """Training augmentation (radians, fractions)."""

    flip_x: bool = True
    flip_y: bool = True
    rotation: float = np.pi / 4          # uniform in [-rotation, rotation]
    scale: tuple[float, float] = (0.95, 1.05)
    dropout: float = 0.1                 # each sweep drops a uniform [0, dropout] fraction of its points
    shift_m: float = 0.0                 # translate the sweep by uniform [-shift_m, shift_m] in x and y (crop training)
    paste: int = 0                       # copy-paste up to this many bank objects into each sweep (0: off)


@dataclass
class Sample:
    """One sweep: points (N, 4) float32 [x, y, z, intensity]; boxes (M, 7) float64; labels (M,) int64 (-1 = ignore)."""

    points: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def augment_sample(s: Sample, aug: Augment, rng: np.random.Generator) -> Sample:
    """A randomly mirrored, rotated, scaled and thinned copy of ``s`` (boxes follow the points)."""
    p = s.points.copy()
    b = s.boxes.copy()
    if aug.flip_x and rng.random() < 0.5:   # mirror x -> -x
        p[:, 0] = -p[:, 0]
        b[:, 0] = -b[:, 0]
        b[:, 6] = np.pi - b[:, 6]
    if aug.flip_y and rng.random() < 0.5:   # mirror y -> -y
        p[:, 1] = -p[:, 1]
        b[:, 1] = -b[:, 1]
        b[:, 6] = -b[:, 6]
    a = rng.uniform(-aug.rotation, aug.rotation)
    c, sn = np.cos(a), np.sin(a)
    x, y = p[:, 0].copy(), p[:, 1].copy()
    p[:, 0], p[:, 1] = c * x - sn * y, sn * x + c * y
    bx, by = b[:, 0].copy(), b[:, 1].copy()
    b[:, 0], b[:, 1] = c * bx - sn * by, sn * bx + c * by
    b[:, 6] = b[:, 6] + a
    k = rng.uniform(*aug.scale)
    p[:, :3] *= k
    b[:, :6] *= k
    b[:, 6] = (b[:, 6] + np.pi) % (2 * np.pi) - np.pi
    if aug.shift_m > 0:
        t = rng.uniform(-aug.shift_m, aug.shift_m, size=2)
        p[:, :2] -= t.astype(np.float32)
        b[:, :2] -= t
    keep = rng.random(len(p)) >= rng.uniform(0, aug.dropout)
    return Sample(p[keep], b, s.labels.copy())


@dataclass
class BankObject:
    """A ground-truth object cut out of a training sweep: its points (P, 4) with z above the road, its box
    (z above the road) and class index."""

    points: np.ndarray
    box: np.ndarray
    label: int


class ObjectBank:
    """Objects of some classes cut from training sweeps, pasted into other sweeps (rare-class augmentation).

    A pasted object keeps its range and its height above the road (sensors of different mounting heights
    share the bank) and is turned about the sensor by a random angle, so the side the LiDAR sees and the point
    density stay consistent with where it sits. It is skipped when its footprint overlaps a box already in the
    sweep; the sweep's points inside the pasted box are removed (the object hides what was there).

    Args:
        objects: per class index, the cut-out objects.
    """

    def __init__(self, objects: dict[int, list[BankObject]]):
        self.objects = {k: v for k, v in objects.items() if v}

    def __len__(self) -> int:
        return sum(len(v) for v in self.objects.values())

    @classmethod
    def build(cls, ds: "LogFrames", labels: tuple[int, ...], frame_step: int = 4, min_points: int = 30) -> "ObjectBank":
        """Cut every object of ``labels`` with >= ``min_points`` points from every ``frame_step``-th sample."""
        objects: dict[int, list[BankObject]] = {k: [] for k in labels}
        for k in range(0, len(ds), frame_step):
            raw = ds.sample(k)
            want = np.isin(raw.labels, labels)
            if not want.any():
                continue
            h = ds.lidar_height(k)
            inside = points_in_boxes(raw.points[:, :3], raw.boxes[want])
            for n, (b, lab) in enumerate(zip(raw.boxes[want], raw.labels[want])):
                p = raw.points[inside[:, n]].copy()
                if len(p) < min_points:
                    continue
                p[:, 2] += h
                box = b.copy()
                box[2] += h
                objects[int(lab)].append(BankObject(p, box, int(lab)))
        return cls(objects)

    def paste(self, s: Sample, lidar_height: float, n: int, rng: np.random.Generator) -> Sample:
        """``s`` with up to ``n`` objects pasted (classes drawn uniformly, then an object of the class)."""
        if not self.objects or n <= 0:
            return s
        classes = sorted(self.objects)
        pts, boxes, labels = s.points, s.boxes, s.labels
        new_boxes, new_pts, new_labels = [], [], []
        for _ in range(int(rng.integers(1, n + 1))):
            pool = self.objects[classes[int(rng.integers(len(classes)))]]
            o = pool[int(rng.integers(len(pool)))]
            a = rng.uniform(-np.pi, np.pi)
            c, sn = np.cos(a), np.sin(a)
            b = o.box.copy()
            b[0], b[1] = c * o.box[0] - sn * o.box[1], sn * o.box[0] + c * o.box[1]
            b[2] -= lidar_height
            b[6] = (b[6] + a + np.pi) % (2 * np.pi) - np.pi
            others = np.concatenate([boxes] + [x[None] for x in new_boxes]) if len(boxes) or new_boxes else np.zeros((0, 7))
            grown = b.copy()
            grown[3:5] += 0.5
            if len(others) and bev_iou(grown[None], others).max() > 0:
                continue
            p = o.points.copy()
            x, y = p[:, 0].copy(), p[:, 1].copy()
            p[:, 0], p[:, 1] = c * x - sn * y, sn * x + c * y
            p[:, 2] -= lidar_height
            new_boxes.append(b)
            new_pts.append(p.astype(np.float32))
            new_labels.append(o.label)
        if not new_boxes:
            return s
        nb = np.stack(new_boxes)
        hide = points_in_boxes(pts[:, :3], nb, margin=0.1).any(axis=1)
        # the road under a pasted object stays (the LiDAR sees it around the object); only what is inside goes
        return Sample(np.concatenate([pts[~hide]] + new_pts), np.concatenate([boxes, nb]),
                      np.concatenate([labels, np.asarray(new_labels, np.int64)]))


class LogFrames(torch.utils.data.Dataset):
    """Every ``frame_step``-th frame of some native logs.

    Args:
        logs: log folder paths.
        classes: the model's classes (label order).
        frame_step: keep frames 0, step, 2 step, ... of each log.
        augment: None for evaluation.
        seed, epoch: augmentation seed; call :meth:`set_epoch` before each epoch.
        min_points: GT boxes with fewer LiDAR points (``num_lidar_pts``) are labelled -1 (ignored).
    """

    def __init__(self, logs: list[str], classes: tuple[str, ...], frame_step: int = 1, augment: Augment | None = None,
                 seed: int = 0, min_points: int = 1):
        self.indexes = [read_log_index(p) for p in logs]
        self.items = [(li, i) for li, idx in enumerate(self.indexes) for i in range(0, len(idx), frame_step)]
        self.classes = tuple(classes)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.min_points = min_points
        self.bank: ObjectBank | None = None  # set for copy-paste augmentation (Augment.paste > 0)
        self._npts = []
        self._cats: list[dict[int, set]] = []
        for idx in self.indexes:
            a = idx.annotations
            counts = {}
            cats: dict[int, set] = {}
            if a is not None:
                for t, c in zip(a.column("timestamp_ns").to_pylist(), a.column("category").to_pylist()):
                    cats.setdefault(int(t), set()).add(c)
            self._cats.append(cats)
            if a is not None and "num_lidar_pts" in a.column_names:
                ts = a.column("timestamp_ns").to_numpy()
                n = a.column("num_lidar_pts").to_numpy()
                for t in np.unique(ts):
                    counts[int(t)] = n[ts == t]
            self._npts.append(counts)

    def categories(self, k: int) -> set:
        """Categories with a GT box in sample ``k`` (from the annotations table, before any filtering)."""
        li, i = self.items[k]
        return self._cats[li].get(int(self.indexes[li].timestamps_ns[i]), set())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def frame(self, k: int):
        li, i = self.items[k]
        return load_frame(self.indexes[li], i, with_images=False)

    def lidar_height(self, k: int) -> float:
        """Height of sample ``k``'s LiDAR above the road (its log's ego_from_lidar z; the ego origin is on the road)."""
        return float(self.indexes[self.items[k][0]].ego_from_lidar[2, 3])

    def sample(self, k: int) -> Sample:
        """Sample ``k`` without augmentation."""
        li, i = self.items[k]
        f = load_frame(self.indexes[li], i, with_images=False)
        boxes = f.gt_boxes if f.gt_boxes is not None else np.zeros((0, 7))
        cats = f.gt_categories if f.gt_categories is not None else np.zeros(0, dtype=object)
        lut = {c: n for n, c in enumerate(self.classes)}
        labels = np.array([lut.get(c, -1) for c in cats], dtype=np.int64)
        npts = self._npts[li].get(int(f.timestamp_ns))
        if npts is not None and len(npts) == len(labels):
            labels[(npts >= 0) & (npts < self.min_points)] = -1
        return Sample(f.points, np.asarray(boxes, np.float64).reshape(-1, 7), labels)

    def __getitem__(self, k: int) -> Sample:
        s = self.sample(k)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, k])
            if self.bank is not None and self.augment.paste > 0:
                s = self.bank.paste(s, self.lidar_height(k), self.augment.paste, rng)
            s = augment_sample(s, self.augment, rng)
        return s
