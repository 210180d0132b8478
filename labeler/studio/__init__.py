"""Label Studio integration: run a local server, build the review project, push pre-labelled frames.

* :mod:`.server`: start / reuse / stop a local server (``start_server``, ``stop_server``), token in a 0600 file.
* :mod:`.client`: ``connect`` an authenticated SDK client (args > env > state dir).
* :mod:`.labeling_config`: the review UI (rotated BEV boxes + camera boxes + per-region z / height).
* :mod:`.convert`: pure box <-> Label Studio rectangle conversions and result builders / parsers.
* :mod:`.tasks`: ``ReviewTask`` / ``CameraView`` / ``PushedTask``, what the pipeline sends.
* :mod:`.push`: ``ensure_project``, ``ensure_local_storage``, ``push_tasks`` (idempotent by frame_key).

Submodules importing the SDK are not imported here, so ``labeler.studio.convert`` stays light.
"""
