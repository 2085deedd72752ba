"""Random affine augmentation of whole training batches, with Keras ``ImageDataGenerator``'s meanings.

The lesson writes ``ImageDataGenerator(rotation_range=45, width_shift_range=.15, height_shift_range=.15,
zoom_range=.5)``; here that is ``Augment(rotation=45, shift=0.15, zoom=0.5)`` or, on the command line,
``--augment rotation=45,shift=0.15,zoom=0.5``. What each setting means (as in Keras):

- ``rotation=R``: rotate by an angle drawn uniformly from ``[-R, R]`` degrees.
- ``shift=S`` (or ``width_shift``/``height_shift`` separately): move by up to ``±S`` of the width/height
  (``0.15`` on 28 pixels: up to 4.2 pixels each way).
- ``zoom=Z``: scale factor drawn from ``[1-Z, 1+Z]``, separately for width and height unless
  ``keep_aspect=true``. As in Keras, a factor above 1 shows a larger area (the digit looks *smaller*),
  below 1 zooms in.
- ``shear=D``: shear angle drawn from ``[-D, D]`` degrees.
- ``flip=none|horizontal|vertical|both``: mirror half of the images. A mirrored 2 is no digit and a
  flipped 6 reads as a 9: use flips only for classes that stay themselves (clothes, not digits).
- ``fill=nearest|constant|reflect``: what fills the area moved in from outside (Keras's ``fill_mode``;
  ``constant`` fills with 0, black).

Every image of a batch gets its own random parameters, and the whole batch is warped at once (one
``affine_grid`` + ``grid_sample``, bilinear, as Keras's default interpolation). Random numbers come only
from the generator passed in, which the training engine seeds and saves in every checkpoint: a resumed
run draws exactly what the uninterrupted run would have. Only training batches are augmented.

One difference from Keras, on purpose: the shift is applied last, in output pixels, so ``shift=0.1``
moves the content by up to 10% whatever the zoom (Keras shifts before zooming, scaling the shift).

>>> import torch
>>> aug = Augment.parse("rotation=45,shift=0.15,zoom=0.5")
>>> x = torch.rand(32, 1, 28, 28)
>>> aug(x, torch.Generator().manual_seed(0)).shape
torch.Size([32, 1, 28, 28])
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mnistlab.config import FILLS, FLIP_WARNING, FLIPS, SPEC_HELP, AugmentSpec  # noqa: F401 (re-exported)
from mnistlab.errors import ConfigError

# Per-image parameters, in the column order of the internal table (see ``Augment.sample``).
PARAMS = ("angle", "tx", "ty", "zx", "zy", "shear", "fx", "fy")
# Uniform numbers drawn per image, always all of them, so a batch consumes the same amount of the
# generator whatever the settings: rotation, shift x, shift y, zoom x, zoom y, shear, flip x, flip y.
_DRAWS = 8


@dataclass(frozen=True)
class Augment(AugmentSpec):
    """Random rotation, shift, zoom, shear and flips, drawn per image; see the module docstring.

    The settings, their checks and the spec string live in ``mnistlab.config.AugmentSpec`` (no torch);
    this adds the transform.

    >>> aug = Augment(rotation=10, shift=0.1, zoom=0.1)
    >>> str(aug)
    'rotation=10,shift=0.1,zoom=0.1'
    """

    # -- the transform ---------------------------------------------------------------------------

    @property
    def is_identity(self) -> bool:
        return (self.rotation, self.wshift, self.hshift, self.zoom, self.shear) == (
            0,
            0,
            0,
            0,
            0,
        ) and self.flip == "none"

    @property
    def wshift(self) -> float:
        return self.shift if self.width_shift is None else self.width_shift

    @property
    def hshift(self) -> float:
        return self.shift if self.height_shift is None else self.height_shift

    def sample(self, n: int, generator: torch.Generator, *, device: torch.device | str | None = None,
               size: tuple[int, int] = (28, 28)) -> dict[str, torch.Tensor]:  # fmt: skip
        """Random parameters for ``n`` images of ``size`` (H, W), one set per image.

        Keys: ``angle`` (radians, positive turns the content counter-clockwise), ``tx``/``ty`` (pixels,
        positive moves right/down), ``zx``/``zy`` (Keras's zoom factors), ``shear`` (radians), ``fx``/``fy``
        (+1, or -1 to mirror).
        """
        table = self._table(torch.rand((n, _DRAWS), generator=generator, device=device), size)
        return dict(zip(PARAMS, table.unbind(1), strict=True))

    def _table(self, u, size: tuple[int, int]):
        """Uniform draws ``u`` (n, 8) → parameters (n, 8), columns as ``PARAMS``; NumPy or torch alike."""
        h, w = size
        r, sh, z = math.radians(self.rotation), math.radians(self.shear), self.zoom
        sx, sy = self.wshift * w, self.hshift * h
        lo = (-r, -sx, -sy, 1 - z, 1 - z, -sh, 1.0, 1.0)
        span = (2 * r, 2 * sx, 2 * sy, 2 * z, 2 * z, 2 * sh, 0.0, 0.0)
        if isinstance(u, np.ndarray):
            p = u * np.array(span, u.dtype) + np.array(lo, u.dtype)
        else:
            p = u * torch.tensor(span, dtype=u.dtype, device=u.device) + torch.tensor(
                lo, dtype=u.dtype, device=u.device
            )
        if self.keep_aspect:
            p[:, 4] = p[:, 3]
        if self.flip in ("horizontal", "both"):
            p[:, 6] = 1 - 2 * (u[:, 6] < 0.5)
        if self.flip in ("vertical", "both"):
            p[:, 7] = 1 - 2 * (u[:, 7] < 0.5)
        return p

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Warp the batch ``x`` (float ``(N, C, H, W)``) with given per-image ``params`` (see ``sample``)."""
        _check_batch(x)
        missing = [k for k in PARAMS if k not in params]
        if missing:
            raise ConfigError(f"augment: parameters {', '.join(missing)} missing (expected {', '.join(PARAMS)})")
        table = torch.stack([torch.as_tensor(params[k], dtype=x.dtype, device=x.device) for k in PARAMS], 1)
        return self.warp(x, affine_matrices(table, *x.shape[-2:]))

    def warp(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Resample ``x`` through ``(N, 2, 3)`` matrices in ``F.affine_grid``'s convention, bilinearly."""
        n, _, h, w = x.shape
        with torch.no_grad():
            # The same as F.affine_grid(theta, x.shape), but the (N, 2, 3) @ (3, H*W) product is several
            # times faster on CPU than affine_grid's (H*W, 3) @ (N, 3, 2), which matters at batch 32.
            grid = torch.matmul(theta.to(x.dtype), _base_grid(h, w, x.device, x.dtype))
            grid = grid.transpose(1, 2).unflatten(1, (h, w))
            return F.grid_sample(x, grid, mode="bilinear", padding_mode=FILLS[self.fill], align_corners=False)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A randomly augmented copy of the batch; draws only from ``generator`` (on ``x``'s device)."""
        if self.is_identity:
            return x
        _check_batch(x)
        size = (x.shape[-2], x.shape[-1])
        u = torch.rand((len(x), _DRAWS), generator=generator, device=x.device)
        if u.device.type == "cpu":
            # The same formulas in NumPy: ~30 tiny operations per batch cost ~1 µs each there and ~5 µs
            # each as tensors, which at batch 32 would be most of the augmentation's cost per epoch.
            theta = torch.from_numpy(affine_matrices(self._table(u.numpy(), size), *size))
        else:
            theta = affine_matrices(self._table(u, size), *size)
        return self.warp(x, theta)


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ConfigError(f"augment: expected a float batch of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")


@functools.lru_cache(maxsize=8)
def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(3, H*W)``: the normalised x, y of every pixel centre (align_corners=False), and ones."""
    xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1
    base = torch.stack((xs.repeat(h), ys.repeat_interleave(w), torch.ones(h * w, dtype=torch.float64)))
    return base.to(device=device, dtype=dtype)


def affine_matrices(p, h: int, w: int):
    """``(N, 2, 3)`` matrices for ``F.affine_grid`` from a parameter table ``p`` (N, 8), columns as ``PARAMS``.

    In pixels about the image centre (x right, y down), an output pixel ``q`` samples the source at
    ``Flip · Rot · Shear · Zoom · (q - t)``: the content is flipped, rotated, sheared, zoomed, then
    shifted by ``t``. Shear and zoom are Keras's matrices (``Shear · Zoom = [[a, 0], [-b, zy]]``);
    ``affine_grid`` wants coordinates normalised to [-1, 1] per axis, hence the ``h/w`` factors.
    Takes and returns NumPy arrays or tensors alike.
    """
    cs, sn = (
        (np.cos(p[:, 0::5]), np.sin(p[:, 0::5])) if isinstance(p, np.ndarray) else (p[:, 0::5].cos(), p[:, 0::5].sin())
    )
    c, s, csh, ssh = cs[:, 0], sn[:, 0], cs[:, 1], sn[:, 1]  # rotation and shear angles: columns 0 and 5
    tx, ty, zx, zy, fx, fy = p[:, 1], p[:, 2], p[:, 3], p[:, 4], p[:, 6], p[:, 7]
    a, b = csh * zx, ssh * zx
    m00, m01 = (c * a + s * b) * fx, -s * zy * fx
    m10, m11 = (s * a - c * b) * fy, c * zy * fy
    if isinstance(p, np.ndarray):
        theta = np.empty((len(p), 2, 3), p.dtype)
    else:
        theta = torch.empty((len(p), 2, 3), dtype=p.dtype, device=p.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = m00, m01 * (h / w), (m00 * tx + m01 * ty) * (-2 / w)
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = m10 * (w / h), m11, (m10 * tx + m11 * ty) * (-2 / h)
    return theta


def preview_images(images: np.ndarray, augment: Augment | str, versions: int = 5, seed: int = 0) -> np.ndarray:
    """Each image followed by ``versions`` augmented copies: uint8 ``(N * (versions + 1), H, W[, C])``.

    >>> preview_images(np.zeros((2, 28, 28), np.uint8), "rotation=30", versions=3).shape
    (8, 28, 28)
    """
    from mnistlab.tensors import images_to_tensor

    aug = Augment.parse(augment) if isinstance(augment, str) else augment
    if versions < 1:
        raise ConfigError(f"versions must be ≥ 1, got {versions}")
    images = np.asarray(images)
    x = images_to_tensor(images)  # (N, C, H, W) in 0..1
    g = torch.Generator().manual_seed(seed)
    outs = [x] + [aug(x, g) for _ in range(versions)]
    grid = torch.stack(outs, dim=1).flatten(0, 1)  # image-major: original, then its versions
    grid = (grid * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return grid[..., 0] if images.ndim == 3 else grid
