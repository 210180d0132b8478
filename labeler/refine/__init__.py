"""Offboard refinement (tracking + smoothing), uncertainty signals, review selection, the effort benchmark and the
corner-case bank with its model gate. See docs/refinement.md."""

from labeler.refine.smoothing import RefineCfg, refine_log
from labeler.refine.tracking import TrackCfg, to_world, track

__all__ = ["RefineCfg", "TrackCfg", "refine_log", "to_world", "track"]
