"""Human review round trip: pull Label Studio annotations back as 3D boxes, log every review action, merge
human and auto-accepted labels, export them (KITTI / nuScenes-style) and measure the review effort.

* :mod:`.tables`: REVIEW_LOG, REVIEW_FRAMES, LABELS, LABELS_2D table specs.
* :mod:`.pull`: ``pull_run`` (export -> 3D boxes -> review log + labels).
* :mod:`.export`: KITTI ``label_2`` files and a nuScenes-style results JSON.
* :mod:`.effort`: cost model, report and plot (``labeler report review``).
* :mod:`.webhook`: a small 127.0.0.1 receiver that pulls a run when annotations change.
* :mod:`.cli`: ``add_parser`` functions for ``labeler pull``, ``labeler report review``, ``labeler webhook``.

See docs/review.md.
"""
