"""Wires the nightly pipeline's steps into one Dask graph and runs it (the only place that knows the order).

ingest+filter+pre-label+project+score (per log chunk)  ->  refine + uncertainty signals (per log, once its
chunks are done)  ->  select within budget (driver)  ->  accepted labels (per log) and review assets (per chunk)
->  push to Label Studio (driver)  ->  write tables + run record.
"""

from __future__ import annotations

import contextlib
import logging
import datetime as dt
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


import labeler
from labeler.classes import CLASSES
from labeler.errors import ConfigError, StudioError
from labeler.io.tables import reset_run_dir, write_part, write_run_record
from labeler.logs.registry import find_logs
from labeler.pipeline import logstep, steps
from labeler.pipeline.cluster import submission_order
from labeler.pipeline.config import PipelineConfig
from labeler.pipeline.selection import select_frames
from labeler.schemas import FRAME_SCORES, FRAMES, QUARANTINE, REVIEW_TASKS, to_table


@dataclass
class RunSummary:
    run_id: str
    run_dir: str
    logs: int = 0
    frames_in: int = 0
    quarantined: int = 0
    filtered: int = 0
    auto_accepted: int = 0
    review: int = 0
    predictions: int = 0
    refined: int = 0
    tracks: int = 0
    accepted_labels: int = 0
    tasks_created: int = 0
    tasks_existing: int = 0
    tasks_updated: int = 0
    studio_url: str | None = None
    project_id: int | None = None
    filter_reasons: dict = field(default_factory=dict)
    quarantine_causes: dict = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.frames_in == self.quarantined + self.filtered + self.auto_accepted + self.review

    def format(self) -> str:
        lines = [
            f"run {self.run_id}  ->  {self.run_dir}",
            f"  logs            {self.logs}",
            f"  frames in       {self.frames_in}",
            f"  quarantined     {self.quarantined}" + (f"   {self.quarantine_causes}" if self.quarantine_causes else ""),
            f"  filtered out    {self.filtered}" + (f"   {self.filter_reasons}" if self.filter_reasons else ""),
            f"  auto-accepted   {self.auto_accepted}",
            f"  sent for review {self.review}   (tasks: {self.tasks_created} new, {self.tasks_updated} updated, {self.tasks_existing} unchanged)",
            f"  3D pre-labels   {self.predictions}" + (f"   (refined: {self.refined} boxes on {self.tracks} tracks)" if self.refined else ""),
            f"  accepted labels {self.accepted_labels}",
            f"  reconciles      {'yes' if self.reconciles else 'NO'}: {self.frames_in} = {self.quarantined} + {self.filtered} + {self.auto_accepted} + {self.review}",
        ]
        if self.studio_url:
            lines.append(f"  review at       {self.studio_url}/projects/{self.project_id}/data")
        return "\n".join(lines)


@contextlib.contextmanager
def dask_client(cfg: PipelineConfig):
    """A distributed Client: the external scheduler in ``dask.scheduler`` or a LocalCluster."""
    from dask.distributed import Client, LocalCluster

    from labeler.pipeline.cluster import local_cluster_settings

    if cfg.dask.scheduler:
        try:
            client = Client(cfg.dask.scheduler, timeout="20s")
        except OSError as e:
            raise ConfigError(f"cannot reach Dask scheduler {cfg.dask.scheduler}: {e}; start it with `dask scheduler` or fix dask.scheduler") from None
        with client:
            yield client
        return
    # workers forked from one server that imported their modules once (fast start and close); one task per worker
    with local_cluster_settings(cfg.model.name), LocalCluster(n_workers=cfg.dask.n_workers, threads_per_worker=cfg.dask.threads_per_worker,
                                        memory_limit=cfg.dask.memory_limit, processes=True, dashboard_address=None,
                                        host="127.0.0.1", silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def _progress(futures, desc: str, enabled: bool):
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    bar = tqdm(total=len(futures), desc=desc, unit="task", disable=not enabled, leave=True)
    for fut in as_completed(futures):
        bar.update(1)
        yield fut
    bar.close()


def ensure_input(cfg: PipelineConfig, progress: bool = True) -> list[tuple[str, str]]:
    """(path, format) of the logs to process; simulates the embedded default when the input folder is empty."""
    logs_url = cfg.input.logs
    is_local = "://" not in logs_url or logs_url.startswith("file://")
    logs: list[tuple[str, str]] = []
    if not is_local or Path(logs_url).exists():
        logs = find_logs(logs_url, cfg.input.format)
    if not logs and cfg.simulate.enabled:
        if not is_local:
            raise ConfigError(f"no logs under {logs_url} and simulation writes only to local folders")
        from labeler.simulate import SimConfig, simulate_logs

        Path(logs_url).mkdir(parents=True, exist_ok=True)
        simulate_logs(logs_url, num_logs=cfg.simulate.num_logs, seed=cfg.simulate.seed,
                      cfg=SimConfig(duration_s=cfg.simulate.duration_s), workers=cfg.dask.n_workers, progress=progress)
        logs = find_logs(logs_url, cfg.input.format)
    if not logs:
        raise ConfigError(f"no native logs found under {logs_url}; point input.logs at a folder of logs or enable simulate")
    if cfg.input.format in ("auto", "", None):
        logs += _unrecognized_folders(logs_url, logs)
    return logs


def _unrecognized_folders(root: str, logs: list[tuple[str, str]]) -> list[tuple[str, None]]:
    """Folders directly under ``root`` that hold no detected log, as ``(path, None)``: auto-detection fails on them
    again in :func:`steps.inspect_log`, which quarantines each as a whole log (cause ``unknown_format``) instead of
    skipping it silently. Hidden folders (``.name``, ``_name``) are ignored."""
    import fsspec

    root = root.rstrip("/")
    if any(p.rstrip("/") == root for p, _ in logs):
        return []
    try:
        fs, p = fsspec.core.url_to_fs(root)
        entries = sorted(fs.ls(p, detail=False))
    except (OSError, ValueError):
        return []
    out: list[tuple[str, None]] = []
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        child = f"{root}/{name}"
        if name.startswith((".", "_")) or not fs.isdir(entry):
            continue
        if any(l.rstrip("/") == child or l.startswith(child + "/") for l, _ in logs):
            continue
        out.append((child, None))
    return out


def _studio_client(cfg: PipelineConfig):
    from labeler.studio.client import connect

    url = cfg.studio.url or os.environ.get("LABEL_STUDIO_URL")
    if url:
        return connect(url=url, api_key=os.environ.get("LABEL_STUDIO_API_KEY"), state_dir=cfg.state_dir), url
    if not cfg.studio.start_local:
        raise StudioError("no Label Studio URL: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or enable studio.start_local")
    from labeler.studio.server import start_server

    info = start_server(Path(cfg.state_dir), port=cfg.studio.port)
    return connect(url=info.url, state_dir=cfg.state_dir), info.url


def run_pipeline(cfg: PipelineConfig, progress: bool = True, push: bool = True, echo=print) -> RunSummary:
    """Run the nightly job described by ``cfg`` (already resolved) and return its summary."""
    run_dir = cfg.output_dir
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{cfg.night}-{started.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    pipeline_version = f"labeler-{labeler.__version__}"
    reset_run_dir(run_dir)
    log_inputs = ensure_input(cfg, progress)
    log_paths = [p for p, _ in log_inputs]
    summary = RunSummary(run_id=run_id, run_dir=run_dir, logs=len(log_paths))
    with dask_client(cfg) as client:
        context_hz = cfg.refine.context_hz if cfg.refine.enabled else 0.0
        infos = client.gather(client.map(steps.inspect_log, log_paths, [f for _, f in log_inputs], run_id=run_id,
                                         fcfg=cfg.filter, context_hz=context_hz, pure=False))
        quarantine = [i.quarantine for i in infos if i.quarantine]
        chunks = []
        for info in infos:
            if info.quarantine:
                continue
            n = cfg.input.chunk_frames
            for k, s in enumerate(range(0, info.num_frames, n)):
                chunks.append(steps.Chunk(info.log_path, info.format, info.log_id, k, s, min(s + n, info.num_frames)))
        summary.frames_in = sum(i.num_frames for i in infos)
        # largest logs first, logs finish in groups (cluster.py)
        chunks = submission_order(chunks, sum(client.nthreads().values()), {i.log_id: i.detector_frames for i in infos})
        futs = client.map(steps.process_chunk, chunks, run_id=run_id, run_dir=run_dir, pipeline_version=pipeline_version,
                          fcfg=cfg.filter, mcfg=cfg.model, scfg=cfg.scoring, sigcfg=cfg.signals,
                          context_hz=context_hz, proposals=cfg.refine.proposals if cfg.refine.enabled else None,
                          pure=False)
        # one refine + signals task per log, started as soon as that log's chunks are done (futures as arguments),
        # ahead of the chunks still waiting (priority): the other workers keep taking chunks meanwhile
        by_log = defaultdict(list)
        for ch, fut in zip(chunks, futs):
            by_log[ch.log_id].append(fut)
        log_futs = {log_id: client.submit(logstep.refine_and_score_log, fs, run_id=run_id, run_dir=run_dir,
                                          rcfg=cfg.refine, sigcfg=cfg.signals, scfg=cfg.selection, priority=1, pure=False)
                    for log_id, fs in by_log.items()}
        results = [f.result() for f in _progress(futs, "ingest, filter, pre-label", progress)]
        results.sort(key=lambda r: (r.chunk.log_id, r.chunk.index))
        for _ in _progress(list(log_futs.values()), "refine, signals", progress):
            pass
        log_sigs = {lid: f.result() for lid, f in log_futs.items()}
        frames = [row for r in results for row in r.frames]
        scores = [row for r in results for row in r.scores]
        quarantine += [row for r in results for row in r.quarantine]
        model_version = next((r.model_version for r in results if r.model_version), "")
        summary.predictions = sum(r.num_predictions for r in results)
        summary.refined = sum(ls.num_refined for ls in log_sigs.values())
        summary.tracks = sum(ls.num_tracks for ls in log_sigs.values())
        sig = {(ls.log_id, f["timestamp_ns"]): f for ls in log_sigs.values() for f in ls.frames}
        for s in scores:
            f = sig[(s["log_id"], s["timestamp_ns"])]
            s["labels_source"] = log_sigs[s["log_id"]].labels_source
            if cfg.selection.strategy == "diverse":
                s["priority"], s["reasons"] = f["priority"], f["reasons"]
        # selection over the whole night
        chosen = select_frames([s["log_id"] for s in scores], [s["timestamp_ns"] for s in scores],
                               [s["priority"] for s in scores], [sig[(s["log_id"], s["timestamp_ns"])]["base_priority"] for s in scores],
                               [s["reasons"] for s in scores], cfg.selection)
        decision = {}
        for s, c in zip(scores, chosen):
            s["decision"] = "review" if c else "auto_accepted"
            decision[(s["log_id"], s["timestamp_ns"])] = s["decision"]
        for f in frames:
            if f["outcome"] == "pending":
                f["outcome"] = decision[(f["log_id"], f["timestamp_ns"])]
        write_part(run_dir, FRAMES, to_table(FRAMES, frames), "0")
        write_part(run_dir, QUARANTINE, to_table(QUARANTINE, quarantine), "0")
        write_part(run_dir, FRAME_SCORES, to_table(FRAME_SCORES, scores), "0")
        # the labels of auto-accepted frames with their provenance, one task per log
        parts = defaultdict(list)
        for ch in chunks:
            parts[ch.log_id].append(ch.part)
        accepted_ts = defaultdict(list)
        for s in scores:
            if s["decision"] == "auto_accepted":
                accepted_ts[s["log_id"]].append(s["timestamp_ns"])
        afuts = [client.submit(logstep.write_accepted, lid, parts[lid], accepted_ts[lid], ls.labels_source, run_id,
                               run_dir, cfg.selection, pure=False) for lid, ls in log_sigs.items()]
        # review assets for the selected frames, one task per chunk
        by_chunk = defaultdict(list)
        chunk_of = {}
        for r in results:
            for row in r.frames:
                chunk_of[(row["log_id"], row["timestamp_ns"])] = r.chunk
        for s in scores:
            if s["decision"] == "review":
                by_chunk[chunk_of[(s["log_id"], s["timestamp_ns"])]].append(s)
        rfuts = [client.submit(steps.prepare_review, ch, [s["timestamp_ns"] for s in ss], [s["priority"] for s in ss],
                               [s["reasons"] for s in ss], run_id, run_dir, cfg.render,
                               labels_source=log_sigs[ch.log_id].labels_source, min_score=cfg.selection.review_min_score,
                               model_version=model_version,
                               pure=False)
                 for ch, ss in by_chunk.items()]
        tasks = [t for f in _progress(rfuts, "render review assets", progress) for t in f.result()]
        summary.accepted_labels = sum(client.gather(afuts))
    tasks.sort(key=lambda t: (-t.priority, t.frame_key))
    review_rows = []
    if push and tasks:
        review_rows = _push(cfg, tasks, run_id, summary, echo)
    write_part(run_dir, REVIEW_TASKS, to_table(REVIEW_TASKS, review_rows), "0")
    summary.filtered = sum(f["outcome"] == "filtered" for f in frames)
    summary.auto_accepted = sum(f["outcome"] == "auto_accepted" for f in frames)
    summary.review = sum(f["outcome"] == "review" for f in frames)
    summary.quarantined = sum(q["frames_affected"] for q in quarantine)
    summary.filter_reasons = dict(sorted(_count(f["filter_reason"] for f in frames if f["filter_reason"]).items()))
    summary.quarantine_causes = dict(sorted(_count(q["cause"] for q in quarantine).items()))
    write_run_record(run_dir, {
        "run_id": run_id, "night": cfg.night, "started_utc": started.isoformat(),
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(), "labeler_version": labeler.__version__,
        "pipeline_version": pipeline_version, "model": cfg.model.name, "model_version": model_version,
        "labels_source": {lid: ls.labels_source for lid, ls in log_sigs.items()},
        "inputs": [{"path": p, "format": f} for p, f in log_inputs], "config": cfg.to_dict(),
        "summary": {k: v for k, v in summary.__dict__.items()},
    })
    if not summary.reconciles:
        raise RuntimeError(f"counts do not reconcile (bug): {summary.format()}")
    return summary


def _push(cfg: PipelineConfig, tasks, run_id: str, summary: RunSummary, echo) -> list[dict]:
    from labeler.studio.push import ensure_local_storage, ensure_project, push_tasks

    client, url = _studio_client(cfg)
    cameras = sorted({v.name for t in tasks for v in t.cameras})
    pid = ensure_project(client, cfg.studio.project_title, list(CLASSES), cameras)
    external = bool(cfg.studio.url or os.environ.get("LABEL_STUDIO_URL"))
    doc_root = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") or (None if external else cfg.state_dir)
    upload = cfg.studio.assets == "upload" or (cfg.studio.assets == "auto" and doc_root is None)
    if not upload:
        if doc_root is None:
            raise StudioError("studio.assets is 'local' but the server's document root is unknown: set "
                              "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, or use studio.assets: upload")
        ensure_local_storage(client, pid, str(Path(cfg.output_dir) / "assets"), doc_root)
    pushed = push_tasks(client, pid, tasks, document_root=None if upload else doc_root, upload=upload)
    summary.studio_url, summary.project_id = url, pid
    by_key = {p.frame_key: p for p in pushed}
    rows = []
    for t in tasks:
        p = by_key[t.frame_key]
        rows.append({"log_id": t.log_id, "timestamp_ns": t.timestamp_ns, "run_id": run_id, "frame_key": t.frame_key,
                     "project_id": pid, "task_id": p.task_id, "status": p.status, "bev_image": t.bev_image_path,
                     "camera_images": [v.image_path for v in t.cameras], "priority": t.priority,
                     "num_predictions": len(t.boxes), "model_version": t.model_version})
    summary.tasks_created = sum(p.status == "created" for p in pushed)
    summary.tasks_existing = sum(p.status == "existing" for p in pushed)
    summary.tasks_updated = sum(p.status == "updated" for p in pushed)
    return rows


def _count(items) -> dict:
    out: dict = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out
