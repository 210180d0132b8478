"""The BEV network: a small CenterPoint-style backbone, neck and centre-heatmap head (pure torch).

Shapes for the default :class:`BevConfig` (B frames, 0.2 m input cells over +-51.2 m, K = 6 classes)::

    raster   (B, 6, 512, 512)   BEV features (labeler.models.bev.raster)
    stem     (B, C0, 256, 256)  3x3 conv stride 2                        C0 = 16
    stage1   (B, C1, 128, 128)  3x3 conv stride 2 + n1 3x3 convs         C1 = 32   (0.8 m cells)
    stage2   (B, C2,  64,  64)  3x3 conv stride 2 + n2 3x3 convs         C2 = 64
    stage3   (B, C3,  32,  32)  3x3 conv stride 2 + n3 3x3 convs         C3 = 128
    neck     (B, N, 128, 128)   1x1 / deconv of every stage to stride 4, summed (N = 32)
    heatmap  (B, K, 128, 128)   per-class centre logits
    reg      (B, 8, 128, 128)   [dx, dy, z, log l, log w, log h, sin yaw, cos yaw] (see labeler.models.bev.targets)

Every conv is conv + BatchNorm + ReLU; :func:`fuse_for_inference` folds the BatchNorms into the convs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from labeler.classes import CLASSES

REG_CHANNELS = ("dx", "dy", "z", "log_l", "log_w", "log_h", "sin_yaw", "cos_yaw")


@dataclass(frozen=True)
class BevConfig:
    """Grid and architecture of a BEV model; saved inside every checkpoint (metres, channels).

    Attributes:
        classes: the classes the heatmap head predicts, in channel order.
        x_range, y_range: grid extent in the LiDAR frame (symmetric about the sensor, see raster.py).
        z_range: points outside are ignored; heights are scaled to [0, 1] over this range (relative to the local
            ground with ``height_ref="ground"``, to the sensor with ``"sensor"``).
        height_ref: ``"ground"`` (heights above a per-sweep ground map, sensor-independent) or ``"sensor"``
            (LiDAR-frame z, the 0.1 model); see labeler.models.bev.raster.
        ground_cell_m: cell of the ground height map.
        intensity_norm: ``"rank"`` (within-sweep intensity CDF) or ``"none"`` (raw intensity in [0, 1]).
        cell_m: input raster cell size.
        density_norm: point count per cell that maps to log-density 1.
        stem_channels: channels of the stride-2 stem conv.
        channels: channels of stages 1..3 (strides 4, 8, 16).
        blocks: extra 3x3 convs per stage after its strided conv.
        neck_channels: channels every stage is projected to before summing at the output stride.
        neck_fuse: one more 3x3 conv after the sum (off by default: the head's shared conv already mixes).
        head_channels: channels of the shared 3x3 head conv.
    """

    classes: tuple[str, ...] = CLASSES
    x_range: tuple[float, float] = (-51.2, 51.2)
    y_range: tuple[float, float] = (-51.2, 51.2)
    z_range: tuple[float, float] = (-1.0, 5.0)
    height_ref: str = "ground"
    ground_cell_m: float = 1.6
    intensity_norm: str = "rank"
    cell_m: float = 0.2
    density_norm: float = 16.0
    stem_channels: int = 16
    channels: tuple[int, int, int] = (32, 64, 128)
    blocks: tuple[int, int, int] = (1, 1, 1)
    neck_channels: int = 32
    neck_fuse: bool = False
    head_channels: int = 32

    @property
    def out_stride(self) -> int:
        return 4

    @property
    def out_cell_m(self) -> float:
        return self.cell_m * self.out_stride

    def to_dict(self) -> dict:
        """Plain types only (lists, floats, str), storable in a ``weights_only`` checkpoint."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "BevConfig":
        """Inverse of :meth:`to_dict`; raises TypeError / ValueError on unknown or missing-typed keys."""
        names = {f.name for f in fields(cls)}
        # checkpoints written before the sensor-independent features existed
        d = {"height_ref": "sensor", "intensity_norm": "none", "z_range": [-3.0, 3.0], **d}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown BevConfig keys {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _cbr(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """Stem + three strided stages. (B, 6, H, W) -> [(B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16)]."""

    def __init__(self, cfg: BevConfig, in_channels: int = 6):
        super().__init__()
        self.stem = _cbr(in_channels, cfg.stem_channels, 2)
        stages, cin = [], cfg.stem_channels
        for c, n in zip(cfg.channels, cfg.blocks):
            stages.append(nn.Sequential(_cbr(cin, c, 2), *[_cbr(c, c) for _ in range(n)]))
            cin = c
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


class Neck(nn.Module):
    """Brings every stage to stride 4 (1x1 conv, 2x and 4x transposed convs), sums, then one 3x3 conv.
    [(B, C1, h, w), (B, C2, h/2, w/2), (B, C3, h/4, w/4)] -> (B, N, h, w)."""

    def __init__(self, cfg: BevConfig):
        super().__init__()
        n = cfg.neck_channels
        c1, c2, c3 = cfg.channels
        self.lat1 = nn.Sequential(nn.Conv2d(c1, n, 1, bias=False), nn.BatchNorm2d(n))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(c2, n, 2, 2, bias=False), nn.BatchNorm2d(n))
        self.up3 = nn.Sequential(nn.ConvTranspose2d(c3, n, 4, 4, bias=False), nn.BatchNorm2d(n))
        self.relu = nn.ReLU(inplace=True)
        self.fuse = _cbr(n, n) if cfg.neck_fuse else nn.Identity()

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = feats
        return self.fuse(self.relu(self.lat1(f1) + self.up2(f2) + self.up3(f3)))


class CenterHead(nn.Module):
    """Shared 3x3 conv, then a 3x3 heatmap conv and a 3x3 regression conv.
    (B, N, h, w) -> {"heatmap": (B, K, h, w) logits, "reg": (B, 8, h, w)}."""

    def __init__(self, cfg: BevConfig):
        super().__init__()
        self.shared = _cbr(cfg.neck_channels, cfg.head_channels)
        self.heatmap = nn.Conv2d(cfg.head_channels, len(cfg.classes), 3, 1, 1)
        self.reg = nn.Conv2d(cfg.head_channels, len(REG_CHANNELS), 3, 1, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior 0.1, as CenterNet / CenterPoint

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.shared(x)
        return {"heatmap": self.heatmap(x), "reg": self.reg(x)}


class BevNet(nn.Module):
    """Backbone -> Neck -> CenterHead. (B, 6, H, W) raster -> {"heatmap": (B, K, H/4, W/4), "reg": (B, 8, H/4, W/4)}."""

    def __init__(self, cfg: BevConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.neck = Neck(cfg)
        self.head = CenterHead(cfg)

    def forward(self, raster: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.neck(self.backbone(raster)))


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a Conv2d in an ``nn.Sequential`` into the conv (eval mode only)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                if isinstance(mod[i], nn.Conv2d) and isinstance(mod[i + 1], nn.BatchNorm2d):
                    mod[i] = fuse_conv_bn_eval(mod[i], mod[i + 1])
                    mod[i + 1] = nn.Identity()
    return model


def count_macs(cfg: BevConfig) -> int:
    """Multiply-adds of one forward pass at batch 1 (convs and transposed convs only)."""
    from labeler.models.bev.raster import grid_shape

    macs = 0
    model = BevNet(cfg)

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            macs += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        elif isinstance(mod, nn.ConvTranspose2d):
            macs += inp[0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 6, *grid_shape(cfg)))
    for h in hs:
        h.remove()
    return macs
