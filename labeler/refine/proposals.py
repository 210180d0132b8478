"""Class-agnostic cluster proposals: above-ground point clusters that no detection explains, turned into weak
extra detections for refinement (docs/refinement.md, "Cluster proposals").

The detector misses objects it has never learnt well (a bus seen from the side, a pedestrian next to a pole); their
points still form an above-ground cluster. :func:`cluster_boxes` clusters one sweep with the geometric model's
ground grid and DBSCAN (:func:`labeler.refine.signals.above_ground_groups`) and fits each cluster the geometric
model's oriented box and size-prior class (:func:`labeler.models.geometric.box_from_cluster`: L-shape fit, the
class whose size range fits, partial views grown to the class's typical size). :func:`frame_proposals` keeps the
clusters no detection of the frame explains, with a low score and ``source = "proposal"``;
:func:`labeler.refine.smoothing.refine_log` tracks them with the detections, so only proposals that form a
consistent track over time survive (short weak tracks are dropped there, and a track's score grows with its
length).

Pure functions except :func:`cluster_boxes` (DBSCAN on the points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from labeler.geometry.boxes import BOX_COLUMNS

PROPOSAL_SOURCE = "proposal"
# the chosen classes: trucks only (other classes' proposals were mostly walls, trees and poles on 000-001)
NO_PROPOSALS_BUT_TRUCKS = {"car": 0.0, "bus": 0.0, "pedestrian": 0.0, "cyclist": 0.0, "traffic_cone": 0.0}
PROPOSAL_COLUMNS = ["timestamp_ns", "object_id", *BOX_COLUMNS, "category", "score", "num_points"]


@dataclass(frozen=True)
class ProposalCfg:
    """Cluster proposals fed to refinement (``refine.proposals`` in a pipeline YAML, ``--refine proposals.<key>=``
    in ``labeler bench efficiency``). Proposals exist only on frames whose points were clustered: the pipeline's
    kept frames (keyframes), the benchmark's evaluation frames."""

    # settings chosen on held-out logs 000-001 (benchmarks/results/efficiency_bev.md, "Cluster proposals"): box error
    # at a 10 % budget 22.4 % -> 22.0 %, mAP 0.564 -> 0.583 there; other classes' proposals were mostly walls and
    # trees (302 of 333 proposals > 2 m from any GT box), truck proposals mostly end-on trucks and buses. OFF because
    # on held-out logs 002-003 they made it worse (23.0 % -> 24.6 %, mAP +4.8 -> +3.4 points over single-frame)
    enabled: bool = False            # True: the clusters no detection explains are tracked with the detections
    min_points: int = 40             # a cluster needs at least this many LiDAR points (the missed_cluster signal's 40)
    score: float = 0.35              # detection score of a proposal (low: a track of proposals alone scores
                                     # score x (1 - exp(-n / 4)) after n frames, under every refined accept score)
    score_by_class: dict = field(default_factory=lambda: dict(NO_PROPOSALS_BUT_TRUCKS))  # class -> score,
                                     # overriding ``score``; 0 = never propose the class. A value given in a
                                     # YAML or with --refine replaces the whole mapping (name every class to keep off)
    margin_m: float = 0.5            # a cluster whose centre lies in a detection's BEV footprint grown by this is
                                     # explained (as in the missed_cluster signal)
    max_range_m: float = 55.0        # no proposals farther than this from the LiDAR
    max_height_m: float = 4.5        # no proposals whose visible top is higher than this above the ground (tree
                                     # canopies, building parts; the geometric model's truck/bus limit is 4.5)
    max_extent_m: float = 15.0       # no proposals from clusters whose larger BEV extent (LiDAR axes) is larger
    max_det_iou: float = 0.0         # drop a proposal whose box overlaps a detection of the frame by more than this
                                     # BEV IoU (0: any overlap; 1: only the centre test above)
    detector_first: bool = True      # a track with detector boxes takes its score, class and size from them alone
                                     # (proposals add frames); False: proposals vote and score like detections

    def score_of(self, category: str) -> float:
        return float(self.score_by_class.get(str(category), self.score))


@dataclass
class ClusterBoxes:
    """The above-ground clusters of one sweep with the geometric model's box for each (LiDAR frame)."""

    clusters: np.ndarray     # (K, 6) [cx, cy, cz, n_points, extent_x, extent_y] (signals.above_ground_clusters)
    boxes: np.ndarray        # (K, 7) x, y, z, l, w, h, yaw; NaN where the cluster fits no class (walls, hedges, poles)
    categories: np.ndarray   # (K,) object: the size-prior class, None where it fits none

    @classmethod
    def empty(cls) -> "ClusterBoxes":
        return cls(np.zeros((0, 6)), np.zeros((0, 7)), np.zeros(0, dtype=object))

    def to_dict(self) -> dict:
        """Plain lists (picklable, small) for the pipeline's per-frame signal inputs."""
        return {"clusters": self.clusters.tolist(), "boxes": self.boxes.tolist(), "categories": self.categories.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ClusterBoxes":
        return cls(np.asarray(d["clusters"], dtype=np.float64).reshape(-1, 6),
                   np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 7), np.asarray(d["categories"], dtype=object))


def cluster_boxes(points, min_points: int = 10, fit_min_points: int = 10) -> ClusterBoxes:
    """Cluster one sweep ``points`` (N, >=3; LiDAR frame) and fit each cluster of >= ``min_points`` points the
    geometric model's oriented box and class (with ``large_end_faces``: an end-on truck or bus face becomes a
    truck along the line of sight, not a crosswise one). ``clusters`` equals
    :func:`labeler.refine.signals.above_ground_clusters` of the same points (one clustering pass serves both);
    clusters under ``fit_min_points`` points get no box (NaN; they can never be proposals)."""
    from dataclasses import replace

    from labeler.models.geometric import box_from_cluster
    from labeler.refine.signals import above_ground_groups, cluster_summary

    obs, hgt, ground, gcfg, groups = above_ground_groups(points, min_points)
    if not groups:
        return ClusterBoxes.empty()
    gcfg = replace(gcfg, large_end_faces=True)
    boxes = np.full((len(groups), 7), np.nan)
    cats = np.full(len(groups), None, dtype=object)
    for k, idx in enumerate(groups):
        if len(idx) < fit_min_points:
            continue
        res = box_from_cluster(obs[idx], hgt[idx], ground, gcfg)
        if res is not None:
            boxes[k], cats[k] = res[0], res[1]
    return ClusterBoxes(cluster_summary(obs, groups), boxes, cats)


def frame_proposals(cb: ClusterBoxes, detections, cfg: ProposalCfg) -> pd.DataFrame:
    """One frame's proposals: clusters with >= ``cfg.min_points`` points, a box and a class proposed at a score
    > 0, within ``cfg.max_range_m``, at most ``cfg.max_height_m`` tall and ``cfg.max_extent_m`` long, whose centre
    lies in no detection's footprint (grown by ``cfg.margin_m``) and whose box overlaps no detection by more than
    ``cfg.max_det_iou``.

    ``detections``: (M, 7) boxes of the frame's detections (the ones refinement sees, i.e. above the detector's
    score threshold). Returns rows ``x..yaw, category, score, num_points`` (no timestamp)."""
    from labeler.refine.signals import unexplained_clusters

    cols = [*BOX_COLUMNS, "category", "score", "num_points"]
    if len(cb.clusters) == 0:
        return pd.DataFrame(columns=cols)
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 7)
    has_box = np.isfinite(cb.boxes).all(axis=1) & np.array([c is not None for c in cb.categories], dtype=bool)
    scores = np.array([cfg.score_of(c) if c is not None else 0.0 for c in cb.categories], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        near = np.hypot(cb.boxes[:, 0], cb.boxes[:, 1]) <= cfg.max_range_m
        low = cb.boxes[:, 5] <= cfg.max_height_m
    keep = (has_box & (scores > 0) & near & low
            & unexplained_clusters(cb.clusters, det, cfg.min_points, cfg.margin_m, cfg.max_extent_m))
    if cfg.max_det_iou < 1.0 and len(det) and keep.any():
        from labeler.geometry.boxes import bev_iou

        k = np.nonzero(keep)[0]
        keep[k[bev_iou(cb.boxes[k], det).max(axis=1) > cfg.max_det_iou]] = False
    out = pd.DataFrame(cb.boxes[keep], columns=list(BOX_COLUMNS))
    out["category"] = [str(c) for c in cb.categories[keep]]
    out["score"] = scores[keep]
    out["num_points"] = cb.clusters[keep, 3].astype(np.int64)
    return out


def log_proposals(per_frame: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """One log's proposals (timestamp_ns -> :func:`frame_proposals` rows) as refinement input rows with
    ``timestamp_ns`` and ``object_id`` (``c000``, ``c001`` ... per frame; not predictions_3d rows)."""
    parts = []
    for t, df in sorted(per_frame.items()):
        if len(df):
            df = df.copy()
            df.insert(0, "object_id", [f"c{k:03d}" for k in range(len(df))])
            df.insert(0, "timestamp_ns", int(t))
            parts.append(df)
    if not parts:
        return pd.DataFrame(columns=PROPOSAL_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PROPOSAL_COLUMNS]
