"""Camera images as readers hand them out: checked and reduced when read, decoded in full only when asked.

The pipeline's per-frame work on images is the camera health check (mean brightness and sharpness), which
looks at the image at :data:`HEALTH_WIDTH` px wide. A JPEG can be decoded straight to 1/2, 1/4 or 1/8 scale
(libjpeg's DCT scaling, PIL ``Image.draft``) for a fraction of a full decode, so a reader:

* reads the encoded bytes and decodes the **health view** at once (:func:`open_image`): this is also the check
  that the file decodes at all, so a corrupt or truncated image still fails inside ``load_frame`` with
  ``corrupt_image``;
* keeps the bytes, and decodes the **full image** only when someone indexes ``frame.images[cam]``
  (:class:`LazyImages`), once, cached.

A frame the filters drop therefore never pays a full decode, and a frame that goes on decodes in full at most
once, and only if a consumer needs pixels (the detectors look at points; review assets copy the files).

Formats without reduced decoding (PNG) are decoded in full once, and the full image is kept.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from labeler.errors import InputError

HEALTH_WIDTH = 320
"""Width (px) of the view the camera health checks look at (``filters.sharpness`` and image means)."""


def health_view_image(img: Image.Image, width: int = HEALTH_WIDTH) -> Image.Image:
    """``img`` in RGB, reduced by an integer factor (box filter) then resized to ``width`` px wide.

    Images narrower than ``width`` are returned as they are (no up-scaling).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.width > width:
        f = img.width // width
        if f > 1:
            img = img.reduce(f)
        if img.width != width:
            img = img.resize((width, max(1, round(img.height * width / img.width))), Image.BILINEAR)
    return img


def health_view(img: Image.Image, width: int = HEALTH_WIDTH) -> np.ndarray:
    """(h, ``width``, 3) uint8 RGB array of :func:`health_view_image`."""
    return np.asarray(health_view_image(img, width))


class EncodedImage:
    """One camera image: encoded bytes, its health view (decoded at once) and, on demand, the full image.

    Attributes:
        raw: the encoded file bytes.
        display: path or URL named in errors.
        frame: frame timestamp (ns) named in errors.
        size: (width, height) of the full image, px.
        view: (h, <= HEALTH_WIDTH, 3) uint8 RGB health view.
    """

    __slots__ = ("_full", "_view_image", "display", "frame", "raw", "size", "view")

    def __init__(self, raw: bytes, display: str, frame: int | None, width: int = HEALTH_WIDTH):
        self.raw, self.display, self.frame = raw, display, frame
        self._full: np.ndarray | None = None
        try:
            img = Image.open(io.BytesIO(raw))
            self.size = img.size
            if img.format == "JPEG" and img.width > width:
                img.draft("RGB", (width, max(1, img.height * width // img.width)))  # DCT scaling: >= the asked size
                img.load()
            else:  # no reduced decoding: decode in full once and keep it
                img.load()
                self._full = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(display, "corrupt_image", f"cannot decode image ({e})", frame) from None
        self._view_image = health_view_image(img, width)  # kept for grey_view (no array -> image round trip)
        self.view = np.asarray(self._view_image)

    def grey_view(self) -> np.ndarray:
        """(h, <= HEALTH_WIDTH) uint8 grey (PIL "L" weights) of :attr:`view`."""
        return np.asarray(self._view_image.convert("L"))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the full image, without decoding it."""
        return (self.size[1], self.size[0], 3)

    def full(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, decoded on the first call and kept."""
        if self._full is None:
            try:
                img = Image.open(io.BytesIO(self.raw))
                img.load()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise InputError(self.display, "corrupt_image", f"cannot decode image ({e})", self.frame) from None
            self._full = np.asarray(img.convert("RGB"))
        return self._full

    @property
    def decoded(self) -> bool:
        """Whether the full image has been decoded."""
        return self._full is not None


def open_image(raw: bytes, display: str, frame: int | None) -> EncodedImage:
    """Check and reduce one encoded image (raises ``InputError`` ``corrupt_image`` naming file and frame)."""
    return EncodedImage(raw, display, frame)


class LazyImages(Mapping):
    """camera name -> (H, W, 3) uint8 RGB, like a dict, but each image is decoded in full on first access.

    :meth:`health_views` gives the reduced views the health checks use, without a full decode. Values may also
    be plain arrays (already decoded images), which are their own full image.
    """

    def __init__(self, images: dict[str, EncodedImage | np.ndarray] | None = None):
        self._images = dict(images or {})

    def __getitem__(self, cam: str) -> np.ndarray:
        v = self._images[cam]
        return v.full() if isinstance(v, EncodedImage) else v

    def __iter__(self) -> Iterator[str]:
        return iter(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def __repr__(self) -> str:
        return f"LazyImages({sorted(self._images)})"

    def encoded(self, cam: str) -> EncodedImage | None:
        v = self._images[cam]
        return v if isinstance(v, EncodedImage) else None

    def size(self, cam: str) -> tuple[int, int]:
        """(width, height) of camera ``cam``'s full image, without decoding it."""
        v = self._images[cam]
        return v.size if isinstance(v, EncodedImage) else (v.shape[1], v.shape[0])

    def health_views(self, width: int = HEALTH_WIDTH) -> dict[str, np.ndarray]:
        """camera -> (h, <= ``width``, 3) uint8 RGB view for the health checks (no full decode of encoded images)."""
        out = {}
        for cam, v in self._images.items():
            if isinstance(v, EncodedImage) and v.view.shape[1] == min(width, v.size[0]):
                out[cam] = v.view
            else:
                out[cam] = health_view(Image.fromarray(self[cam]), width)
        return out

    def health_greys(self, width: int = HEALTH_WIDTH) -> dict[str, np.ndarray]:
        """camera -> the grey of :meth:`health_views` (for the sharpness check)."""
        out = {}
        for cam, v in self._images.items():
            if isinstance(v, EncodedImage) and v.view.shape[1] == min(width, v.size[0]):
                out[cam] = v.grey_view()
            else:
                out[cam] = np.asarray(Image.fromarray(self.health_views(width)[cam]).convert("L"))
        return out

    def num_decoded(self) -> int:
        """How many images have been decoded in full (diagnostics and tests)."""
        return sum(1 for v in self._images.values() if not isinstance(v, EncodedImage) or v.decoded)
