"""Train the BEV detector on simulated logs and evaluate it on held-out simulated logs.

``train(TrainConfig(...))`` simulates the training logs if they are missing (seed ``sim_seed``, never the held-out
seed), trains with AdamW + one-cycle LR on augmented sweeps (:mod:`labeler.models.bev.data`), evaluates on the
held-out logs (seed ``eval_seed``, by default 0: logs ``sim-0000-*``) with nuScenes-style centre-distance AP and
writes a checkpoint (see :mod:`labeler.models.bev.detector`) holding the config, the weights, the metrics and the
training config. Everything is deterministic given ``seed`` (single process data loading, seeded augmentation and
shuffling; CPU float results can still differ in the last bits between machines / thread counts).

CLI: ``python -m labeler.models.bev.train --help`` (the future ``labeler train`` subcommand calls :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labeler.errors import ConfigError
from labeler.models.bev.data import Augment, LogFrames, ObjectBank, Sample
from labeler.models.bev.network import BevConfig, BevNet
from labeler.models.bev.raster import rasterize
from labeler.models.bev.targets import Targets, bev_loss, build_targets, relative_z_targets

MODEL_VERSION = "0.2.0"
GOAL_CLASSES = ("car", "truck", "bus", "pedestrian", "cyclist")  # the mAP the goal is stated on
# LiDAR and ground truth do not depend on the camera image size (separate random streams): tiny images make
# simulating training data ~2x faster.
SIM_IMAGE_SIZE = (64, 36)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (paths, seeds, optimisation). Saved in the checkpoint."""

    out: str = "models/bev_small.pt"          # checkpoint to write
    logs: str = "state/train_mixed"           # training logs folder (simulated there if absent)
    num_logs: int = 32                        # training logs sim-<sim_seed>-000 ..
    sim_seed: int = 2000                      # simulator seed of the training logs (must differ from eval_seed)
    duration_s: float = 10.0                  # length of each simulated log
    lidar_profiles: tuple[str, ...] = ("hdl32e", "hdl64e", "pandar40", "vlp32c_x2", "vlp16")  # sensors the logs mix
    extra_logs: tuple[str, ...] = ("state/train_logs:1000:16:20",)  # more sets "FOLDER:SEED:NUM:DURATION[:PROFILE+..]"
    frame_step: int = 2                       # train on every n-th frame (consecutive sweeps are near duplicates)
    eval_logs: str = "state/heldout_logs"     # held-out logs folder (simulated there if absent)
    eval_num_logs: int = 4
    eval_seed: int = 0
    eval_frame_step: int = 2
    eval_duration_s: float = 20.0             # length of each held-out log
    epochs: int = 6
    batch_size: int = 4
    lr: float = 2e-3                          # one-cycle peak learning rate
    weight_decay: float = 0.01
    pct_start: float = 0.3                    # one-cycle warm-up fraction
    grad_clip: float = 10.0
    seed: int = 0                             # weights init, shuffling and augmentation
    threads: int = 2                          # torch intra-op threads
    max_steps: int = 0                        # > 0: stop after this many steps (smoke tests)
    log_every: int = 50
    evaluate: bool = True
    init: str = ""                            # start from this checkpoint's weights (same network; fine-tuning); "" = random init
    balance: tuple[str, ...] = ()             # oversample frames holding these classes (each present class adds 1 to the weight)
    crop_m: float = 25.6                      # train on random +-crop_m crops of the grid (0: the full grid)
    paste: int = 0                            # copy-paste up to this many bank objects per sweep (0: off)
    paste_classes: tuple[str, ...] = ("bus", "truck", "cyclist")  # classes the copy-paste bank holds
    model: BevConfig = field(default_factory=BevConfig)
    augment: Augment = field(default_factory=Augment)


def ensure_logs(root: str, num_logs: int, seed: int, duration_s: float, lidar_profiles: tuple[str, ...] = ()) -> list[str]:
    """Paths of ``num_logs`` simulated logs ``sim-<seed>-<i>`` under ``root``, simulating the missing ones."""
    from labeler.simulate import SimConfig, simulate_logs

    cfg = SimConfig(duration_s=duration_s, image_width=SIM_IMAGE_SIZE[0], image_height=SIM_IMAGE_SIZE[1],
                    lidar_profiles=tuple(lidar_profiles))
    return simulate_logs(root, num_logs=num_logs, seed=seed, cfg=cfg, workers=2, progress=False)


def parse_log_set(spec: str, eval_seed: int) -> tuple[str, int, int, float, tuple[str, ...]]:
    """``"FOLDER:SEED:NUM:DURATION[:PROFILE+PROFILE..]"`` -> (folder, seed, num, duration, profiles)."""
    parts = spec.split(":")
    try:
        folder, seed, num, dur = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
        profiles = tuple(x for x in parts[4].split("+") if x) if len(parts) > 4 else ()
    except (IndexError, ValueError):
        raise ConfigError(f"training log set {spec!r}: expected FOLDER:SEED:NUM:DURATION[:PROFILE+PROFILE..], "
                          "e.g. state/train_logs:1000:16:20") from None
    if seed == eval_seed:
        raise ConfigError(f"training log set {spec!r} uses the held-out eval_seed {eval_seed}; pick another seed")
    return folder, seed, num, dur, profiles


def collate(samples: list[Sample], cfg: BevConfig) -> tuple[list[np.ndarray], Targets]:
    return [s.points for s in samples], Targets.stack([build_targets(s.boxes, s.labels, cfg) for s in samples])


def save_checkpoint(path: str | Path, model: BevNet, cfg: TrainConfig, metrics: dict) -> None:
    """Write a ``weights_only``-loadable checkpoint (see labeler.models.bev.detector)."""
    from labeler.models.bev.detector import FORMAT, FORMAT_VERSION

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    train_cfg = json.loads(json.dumps(asdict(cfg), default=list))
    ck = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": MODEL_VERSION,
          "config": model.cfg.to_dict(), "classes": list(model.cfg.classes),
          "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
          "metrics": metrics, "train": train_cfg}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ck, tmp)
    tmp.replace(path)


def evaluate_detector(detector, logs: list[str], frame_step: int = 2, batch: int = 4):
    """nuScenes-style evaluation of ``detector`` on every ``frame_step``-th frame of ``logs``.

    Returns (EvalResult over labeler's CLASSES, mean AP over :data:`GOAL_CLASSES`, frames evaluated, seconds in predict).
    """
    from labeler.eval.detection import EvalConfig, evaluate

    ds = LogFrames(logs, detector.classes, frame_step=frame_step)
    preds, gts = [], []
    cols = ("x", "y", "z", "l", "w", "h", "yaw")
    t_pred = 0.0
    for s in range(0, len(ds), batch):
        frames = [ds.frame(k) for k in range(s, min(len(ds), s + batch))]
        t0 = time.perf_counter()
        dets = detector.predict(frames)
        t_pred += time.perf_counter() - t0
        for f, d in zip(frames, dets):
            for b, c, sc in zip(d.boxes, d.categories, d.scores):
                preds.append({"log_id": f.log_id, "timestamp_ns": f.timestamp_ns, "category": c, **dict(zip(cols, b)), "score": sc})
    for li, idx in enumerate(ds.indexes):
        a = idx.annotations.to_pandas()
        keep = set(int(idx.timestamps_ns[i]) for (l2, i) in ds.items if l2 == li)
        a = a[a["timestamp_ns"].isin(keep)].copy()
        a["log_id"] = idx.log_id
        gts.append(a)
    P = pd.DataFrame(preds, columns=["log_id", "timestamp_ns", "category", *cols, "score"])
    G = pd.concat(gts, ignore_index=True)
    res = evaluate(P, G, EvalConfig())
    map5 = float(np.mean([res.class_ap[c] for c in GOAL_CLASSES]))
    return res, map5, len(ds), t_pred


def _step_lr_schedule(opt, cfg: TrainConfig, total: int):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, total), pct_start=cfg.pct_start,
                                               div_factor=10.0, final_div_factor=100.0)


def train(cfg: TrainConfig) -> Path:
    """Run a training (see the module docstring); returns the checkpoint path."""
    if cfg.sim_seed == cfg.eval_seed:
        raise ConfigError(f"training sim_seed {cfg.sim_seed} equals the held-out eval_seed; pick another (e.g. 1000)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    t_start = time.time()
    sets = [(cfg.logs, cfg.sim_seed, cfg.num_logs, cfg.duration_s, tuple(cfg.lidar_profiles))]
    sets += [parse_log_set(x, cfg.eval_seed) for x in cfg.extra_logs]
    logs = [p for folder, seed, num, dur, prof in sets for p in ensure_logs(folder, num, seed, dur, prof)]
    print(f"[train] {len(logs)} training logs ready ({time.time() - t_start:.0f} s)", flush=True)
    # crop training: the network is fully convolutional, so it trains on a smaller grid (random translations of
    # the sweep choose which part of the full grid) and runs on the full grid
    train_model = cfg.model
    augment = cfg.augment
    if cfg.crop_m > 0:
        train_model = replace(cfg.model, x_range=(-cfg.crop_m, cfg.crop_m), y_range=(-cfg.crop_m, cfg.crop_m))
        augment = replace(augment, shift_m=max(0.0, min(cfg.model.x_range[1], cfg.model.y_range[1]) - cfg.crop_m))
    augment = replace(augment, paste=cfg.paste)
    ds = LogFrames(logs, cfg.model.classes, frame_step=cfg.frame_step, augment=augment, seed=cfg.seed)
    if cfg.paste > 0:
        t_bank = time.time()
        ds.bank = ObjectBank.build(ds, tuple(cfg.model.classes.index(c) for c in cfg.paste_classes))
        print(f"[train] copy-paste bank: {', '.join(f'{cfg.model.classes[k]} {len(v)}' for k, v in ds.bank.objects.items())} "
              f"objects ({time.time() - t_bank:.0f} s)", flush=True)
    model = BevNet(cfg.model)
    if cfg.init:
        from labeler.models.bev.detector import build_model, load_checkpoint

        init_model, init_cfg = build_model(load_checkpoint(cfg.init), cfg.init)
        arch = ("classes", "cell_m", "stem_channels", "channels", "blocks", "neck_channels", "neck_fuse", "head_channels")
        diff = [k for k in arch if getattr(init_cfg, k) != getattr(cfg.model, k)]
        if diff:
            raise ConfigError(f"--init {cfg.init}: its network differs from the one being trained in {diff}")
        # the input features may differ (e.g. a 0.1 checkpoint's raw heights / intensities): same channels,
        # similar meaning, so its weights are a good start
        model.load_state_dict(init_model.state_dict())
    model.to(memory_format=torch.channels_last)
    weights = None
    if cfg.balance:
        weights = torch.tensor([1.0 + len(ds.categories(k) & set(cfg.balance)) for k in range(len(ds))], dtype=torch.float64)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(ds) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    sched = _step_lr_schedule(opt, cfg, total)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    history = []
    t_train = time.time()
    for epoch in range(cfg.epochs):
        ds.set_epoch(epoch)
        if weights is None:
            order = torch.randperm(len(ds), generator=gen).tolist()
        else:
            order = torch.multinomial(weights, len(ds), replacement=True, generator=gen).tolist()
        run = {"loss": 0.0, "heatmap": 0.0, "reg": 0.0}
        n = 0
        for s in range(0, len(order), cfg.batch_size):
            if step >= total:
                break
            pts, tgt = collate([ds[k] for k in order[s : s + cfg.batch_size]], train_model)
            raster, ground = rasterize(pts, train_model, return_ground=True)
            raster = raster.contiguous(memory_format=torch.channels_last)
            tgt = relative_z_targets(tgt, ground, train_model)
            out = model(raster)
            loss, parts = bev_loss(out, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            n += 1
            for k in run:
                run[k] += parts[k]
            if cfg.log_every and step % cfg.log_every == 0:
                el = time.time() - t_train
                print(f"[train] epoch {epoch} step {step}/{total} loss {run['loss'] / n:.3f} (hm {run['heatmap'] / n:.3f} "
                      f"reg {run['reg'] / n:.3f}) lr {sched.get_last_lr()[0]:.2e} {el / step:.2f} s/step "
                      f"eta {el / step * (total - step) / 60:.1f} min", flush=True)
        if n:
            history.append({"epoch": epoch, **{k: v / n for k, v in run.items()}})
            save_checkpoint(cfg.out, model, cfg, {"history": history, "status": f"epoch {epoch} done, not evaluated"})
        if step >= total:
            break
    train_s = time.time() - t_train
    metrics = {"history": history, "train_seconds": round(train_s, 1), "steps": step,
               "train_data": "; ".join(f"{num} logs sim-{seed:04d}-* x {dur:g} s ({'+'.join(prof) or 'hdl32e'})" for _, seed, num, dur, prof in sets)
               + f", every {cfg.frame_step} frames ({len(ds)} frames)"}
    save_checkpoint(cfg.out, model, cfg, metrics)
    if cfg.evaluate:
        from labeler.models.bev.detector import BevDetector

        eval_logs = ensure_logs(cfg.eval_logs, cfg.eval_num_logs, cfg.eval_seed, cfg.eval_duration_s)
        det = BevDetector(cfg.out, threads=cfg.threads)
        res, map5, nframes, t_pred = evaluate_detector(det, eval_logs, cfg.eval_frame_step)
        metrics.update({
            "heldout": f"{len(eval_logs)} logs sim-{cfg.eval_seed:04d}-* x {cfg.eval_duration_s:g} s, every {cfg.eval_frame_step} frames ({nframes} frames)",
            "mean_ap_goal_classes": map5, "mean_ap_all_classes": float(res.mean_ap),
            "class_ap": {c: float(v) for c, v in res.class_ap.items()},
            "ap": {c: {str(t): float(v) for t, v in d.items()} for c, d in res.ap.items()},
            "num_gt": {c: int(v) for c, v in res.num_gt.items()},
            "eval_fps": nframes / max(t_pred, 1e-9),
        })
        save_checkpoint(cfg.out, model, cfg, metrics)
        print(res.format(), flush=True)
        print(f"[train] held-out mean AP over {', '.join(GOAL_CLASSES)}: {map5:.3f}; car AP {res.class_ap['car']:.3f}", flush=True)
    print(f"[train] wrote {cfg.out} (training {train_s / 60:.1f} min, total {(time.time() - t_start) / 60:.1f} min)", flush=True)
    return Path(cfg.out)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="labeler train", description="Train the BEV detector on simulated logs and evaluate it on held-out simulated logs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=d.out, help="checkpoint file to write")
    p.add_argument("--logs", default=d.logs, help="training logs folder; missing logs are simulated there")
    p.add_argument("--num-logs", type=int, default=d.num_logs, help="number of training logs")
    p.add_argument("--sim-seed", type=int, default=d.sim_seed, help="simulator seed of the training logs (not the held-out seed)")
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds per simulated log")
    p.add_argument("--lidar-profiles", default="+".join(d.lidar_profiles),
                   help="'+'-separated LiDAR profiles the training logs draw from (labeler.simulate.lidar.PROFILES); '' = the default HDL-32E")
    p.add_argument("--extra-logs", default=",".join(d.extra_logs),
                   help="comma-separated extra training sets FOLDER:SEED:NUM:DURATION[:PROFILE+..] (simulated when missing); '' = none")
    p.add_argument("--legacy-features", action="store_true",
                   help="train on the 0.1 model's raw features (LiDAR-frame heights over [-3, 3) m, raw intensity) instead of "
                        "heights above the ground map and intensity ranks (reproduces the first two stages of models/bev_small.md)")
    p.add_argument("--paste", type=int, default=d.paste, help="copy-paste up to this many rare objects into each training sweep (0: off)")
    p.add_argument("--paste-classes", default=",".join(d.paste_classes), help="comma-separated classes of the copy-paste bank")
    p.add_argument("--frame-step", type=int, default=d.frame_step, help="train on every n-th frame")
    p.add_argument("--eval-logs", default=d.eval_logs, help="held-out logs folder; missing logs are simulated there")
    p.add_argument("--eval-num-logs", type=int, default=d.eval_num_logs, help="number of held-out logs")
    p.add_argument("--eval-seed", type=int, default=d.eval_seed, help="simulator seed of the held-out logs")
    p.add_argument("--eval-frame-step", type=int, default=d.eval_frame_step, help="evaluate every n-th held-out frame")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training frames")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="frames per step")
    p.add_argument("--lr", type=float, default=d.lr, help="one-cycle peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of weights init, shuffling and augmentation")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--init", default=d.init, help="fine-tune from this checkpoint's weights (same BevConfig)")
    p.add_argument("--balance", default=",".join(d.balance), help="comma-separated classes whose frames are oversampled (+1 weight per present class)")
    p.add_argument("--crop", type=float, default=d.crop_m, help="train on random +-CROP m crops of the grid (0: full grid)")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many steps (0: no limit)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="print the running loss every n steps")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = TrainConfig(out=a.out, logs=a.logs, num_logs=a.num_logs, sim_seed=a.sim_seed, duration_s=a.duration,
                      lidar_profiles=tuple(x for x in a.lidar_profiles.split("+") if x),
                      extra_logs=tuple(x for x in a.extra_logs.split(",") if x), paste=a.paste,
                      paste_classes=tuple(c for c in a.paste_classes.split(",") if c),
                      model=BevConfig(height_ref="sensor", intensity_norm="none", z_range=(-3.0, 3.0)) if a.legacy_features else BevConfig(),
                      frame_step=a.frame_step, eval_logs=a.eval_logs, eval_num_logs=a.eval_num_logs, eval_seed=a.eval_seed,
                      eval_frame_step=a.eval_frame_step, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                      weight_decay=a.weight_decay, seed=a.seed, threads=a.threads, max_steps=a.max_steps, crop_m=a.crop, init=a.init, balance=tuple(c for c in a.balance.split(",") if c),
                      log_every=a.log_every, evaluate=not a.no_eval)
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
