"""Batch augmentation: exact geometry on fixed parameters, per-image randomness, seeding, training use."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mnistlab import augment as A
from mnistlab.augment import Augment, preview_images
from mnistlab.checkpoint import read
from mnistlab.cli import main
from mnistlab.config import from_preset
from mnistlab.datasets import load
from mnistlab.engine import Trainer
from mnistlab.errors import ConfigError
from mnistlab.models import build_model
from mnistlab.runs import train_run
from mnistlab.tensors import images_to_tensor
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return images_to_tensor(np.asarray(load("mnist").x_train[:64]))


def fixed(n: int, **kw: float) -> dict[str, torch.Tensor]:
    base = {"angle": 0.0, "tx": 0.0, "ty": 0.0, "zx": 1.0, "zy": 1.0, "shear": 0.0, "fx": 1.0, "fy": 1.0}
    base.update(kw)
    return {k: torch.full((n,), float(v)) for k, v in base.items()}


def centre_of_mass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[-2:]
    m = x.sum((1, 2, 3))
    cx = (x.sum((1, 2)) * torch.arange(w, dtype=x.dtype)).sum(-1) / m
    cy = (x.sum((1, 3)) * torch.arange(h, dtype=x.dtype)).sum(-1) / m
    return cx, cy


# -- the geometry ---------------------------------------------------------------------------------


def test_zero_parameters_are_the_identity(digits):
    g = torch.Generator().manual_seed(0)
    assert torch.equal(Augment()(digits, g), digits)
    assert torch.equal(Augment.parse("rotation=0,shift=0,zoom=0,shear=0,flip=none")(digits, g), digits)
    # The warp itself with identity parameters samples every pixel centre: equal up to float rounding.
    out = Augment(rotation=10).apply(digits, fixed(len(digits)))
    torch.testing.assert_close(out, digits, atol=1e-5, rtol=0)


def test_fixed_90_degree_rotation_matches_rot90(digits):
    out = Augment(rotation=90).apply(digits, fixed(len(digits), angle=math.pi / 2))
    # Positive angles turn the content counter-clockwise, as torch.rot90 with k=1 does.
    torch.testing.assert_close(out, torch.rot90(digits, 1, dims=(2, 3)), atol=1e-4, rtol=0)
    out = Augment(rotation=90).apply(digits, fixed(len(digits), angle=-math.pi / 2))
    torch.testing.assert_close(out, torch.rot90(digits, -1, dims=(2, 3)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(28, 28), (20, 36)])
def test_shift_moves_the_centre_of_mass_by_the_fraction(size):
    h, w = size
    x = torch.zeros(4, 1, h, w)
    x[:, :, h // 2 - 3 : h // 2 + 3, w // 2 - 3 : w // 2 + 3] = 1.0  # a blob well inside the frame
    cx0, cy0 = centre_of_mass(x)
    out = Augment(shift=0.1).apply(x, fixed(4, tx=0.1 * w, ty=-0.05 * h))
    cx, cy = centre_of_mass(out)
    torch.testing.assert_close(cx - cx0, torch.full((4,), 0.1 * w), atol=1e-3, rtol=0)
    torch.testing.assert_close(cy - cy0, torch.full((4,), -0.05 * h), atol=1e-3, rtol=0)


def test_zoom_and_flip_follow_keras(digits):
    # Keras's zoom factor above 1 shows a larger area: the digit gets smaller (less ink).
    zoom_out = Augment(zoom=0.5).apply(digits, fixed(len(digits), zx=1.5, zy=1.5))
    zoom_in = Augment(zoom=0.5).apply(digits, fixed(len(digits), zx=0.7, zy=0.7))
    ink = digits.sum((1, 2, 3))
    assert (zoom_out.sum((1, 2, 3)) < ink * 0.6).all() and (zoom_in.sum((1, 2, 3)) > ink * 1.5).all()
    with pytest.warns(UserWarning, match="flips change what a digit means"):
        flip = Augment(flip="horizontal")
    out = flip.apply(digits, fixed(len(digits), fx=-1.0))
    torch.testing.assert_close(out, torch.flip(digits, dims=(3,)), atol=1e-5, rtol=0)


def test_shear_matches_keras_matrix():
    # Keras: an output pixel (row, col) about the centre samples (row - sin(s) * col, cos(s) * col).
    x = torch.rand(1, 1, 28, 28)
    s = math.radians(20)
    out = Augment(shear=20).apply(x, fixed(1, shear=s))
    c = 13.5
    for r, col in ((5, 20), (14, 10), (20, 17)):
        src_r, src_c = (r - c) - math.sin(s) * (col - c) + c, math.cos(s) * (col - c) + c
        r0, c0 = math.floor(src_r), math.floor(src_c)
        fr, fc = src_r - r0, src_c - c0
        v = x[0, 0]
        want = (v[r0, c0] * (1 - fr) * (1 - fc) + v[r0 + 1, c0] * fr * (1 - fc) + v[r0, c0 + 1] * (1 - fr) * fc
                + v[r0 + 1, c0 + 1] * fr * fc)  # fmt: skip
        assert abs(float(out[0, 0, r, col]) - float(want)) < 1e-4


# -- randomness -----------------------------------------------------------------------------------


def test_each_image_gets_its_own_parameters(digits):
    aug = Augment.parse("rotation=45,shift=0.15,zoom=0.5,shear=10")
    same = digits[:1].repeat(16, 1, 1, 1)
    out = aug(same, torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    dist = torch.cdist(flat, flat)
    assert (dist + torch.eye(16) * 1e9 > 0.5).all()  # every pair differs
    p = aug.sample(16, torch.Generator().manual_seed(0))
    assert len(set(p["angle"].tolist())) == 16 and p["angle"].abs().max() <= math.radians(45)
    assert p["tx"].abs().max() <= 0.15 * 28 and ((p["zx"] >= 0.5) & (p["zx"] <= 1.5)).all()
    assert not torch.equal(p["zx"], p["zy"])
    q = Augment(zoom=0.3, keep_aspect=True).sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(q["zx"], q["zy"])


def test_same_seed_same_batch_and_only_the_given_generator_is_used(digits):
    aug = Augment.parse("rotation=45,shift=0.15,zoom=0.5")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = aug(digits, torch.Generator().manual_seed(7))
    b = aug(digits, torch.Generator().manual_seed(7))
    c = aug(digits, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator was never touched
    # A batch consumes the generator by a fixed amount, so the next batch depends only on the state.
    g = torch.Generator().manual_seed(7)
    aug(digits, g)
    second = aug(digits, g)
    g2 = torch.Generator().manual_seed(7)
    torch.rand((len(digits), A._DRAWS), generator=g2)
    assert torch.equal(second, aug(digits, g2))


def test_numpy_fast_path_equals_the_torch_formulas(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        aug = Augment.parse("rotation=45,shift=0.15,zoom=0.5,shear=15,flip=both")
    u = torch.rand(64, A._DRAWS, generator=torch.Generator().manual_seed(3))
    t_np = torch.from_numpy(A.affine_matrices(aug._table(u.numpy(), (28, 28)), 28, 28))
    t_torch = A.affine_matrices(aug._table(u, (28, 28)), 28, 28)
    torch.testing.assert_close(t_np, t_torch, atol=1e-6, rtol=0)
    # ... and the warp equals torch's own affine_grid + grid_sample.
    grid = torch.nn.functional.affine_grid(t_torch, list(digits.shape), align_corners=False)
    want = torch.nn.functional.grid_sample(digits, grid, padding_mode="border", align_corners=False)
    torch.testing.assert_close(aug.warp(digits, t_torch), want, atol=1e-5, rtol=0)


def test_rgb_and_dtype_kept():
    x = torch.rand(5, 3, 32, 32, dtype=torch.float64)
    out = Augment(rotation=30)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float64 and 0 <= out.min() and out.max() <= 1


# -- the spec string ------------------------------------------------------------------------------


def test_parse_and_print():
    a = Augment.parse(" rotation=45, shift=0.15 ,zoom=0.5,shear=0,flip=none ")
    assert (a.rotation, a.shift, a.zoom, a.shear, a.flip) == (45.0, 0.15, 0.5, 0.0, "none")
    assert str(a) == "rotation=45,shift=0.15,zoom=0.5" and Augment.parse(str(a)) == a
    k = Augment.parse("rotation_range=45,width_shift_range=.15,height_shift_range=.1,zoom_range=.5")
    assert (k.wshift, k.hshift) == (0.15, 0.1)
    with pytest.warns(UserWarning):
        assert Augment.parse("horizontal_flip=true,vertical_flip=1").flip == "both"
    assert Augment.parse("none") == Augment() and str(Augment()) == "none"
    assert Augment.parse("zoom=0.2,keep_aspect=yes").keep_aspect is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rotation=abc", "rotation must be a number, got 'abc'"),
        ("rotation=200", r"rotation must lie in \[0, 180\] degrees, got 200"),
        ("shift=1.5", r"shift must lie in \[0, 1\)"),
        ("zoom=-0.1", r"zoom must lie in \[0, 1\)"),
        ("shear=90", r"shear must lie in \[0, 90\) degrees"),
        ("flip=sideways", "flip must be one of none, horizontal, vertical, both, got 'sideways'"),
        ("fill=wrap", "fill must be one of nearest, constant, reflect"),
        ("spin=3", "unknown setting 'spin'"),
        ("rotation", "expected key=value, got 'rotation'"),
        ("rotation=1,rotation=2", "rotation given twice"),
        ("keep_aspect=maybe", "keep_aspect must be true or false"),
        ("rotation=nan", "rotation must be a number"),
    ],
)
def test_bad_specs_name_the_field(spec, message):
    with pytest.raises(ConfigError, match=message):
        Augment.parse(spec)


def test_bad_batches():
    with pytest.raises(ConfigError, match=r"expected a float batch of shape \(N, C, H, W\)"):
        Augment(rotation=5)(torch.zeros(2, 28, 28), torch.Generator())
    with pytest.raises(ConfigError, match="float batch"):
        Augment(rotation=5)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.Generator())


# -- training and preview -------------------------------------------------------------------------


def test_validation_and_test_data_are_never_augmented():
    ds = load("mnist")
    seen: list[int] = []

    def counting(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        seen.append(len(x))
        return Augment(rotation=10)(x, g)

    model = build_model("mlp", in_shape=(1, 28, 28), num_classes=10)
    trainer = Trainer(model, "adam", 1e-3, augment=counting, augment_spec="rotation=10", verbose=0)
    trainer.fit(
        ds.x_train[:500], ds.y_train[:500], batch_size=100, epochs=2, validation_data=(ds.x_test[:300], ds.y_test[:300])
    )
    trainer.evaluate(ds.x_test[:300], ds.y_test[:300])
    trainer.predict(ds.x_test[:300])
    assert sum(seen) == 1000  # two epochs of the 500 training images, nothing else


def test_training_with_augmentation_resumes_exactly(tmp_path):
    spec = "rotation=20,shift=0.1,zoom=0.2,shear=5"
    cfg = dict(epochs=2, limit_train=1500, limit_test=500, schedule="constant", augment=spec, batch_size=100)
    straight = train_run(from_preset("fast", **cfg), tmp_path / "straight", verbose=0)
    train_run(from_preset("fast", **{**cfg, "epochs": 1}), tmp_path / "split", verbose=0)
    resumed = train_run(None, tmp_path / "split", resume=True, overrides={"epochs": 2}, verbose=0)
    a, _ = read(tmp_path / "straight" / "last.safetensors")
    b, _ = read(tmp_path / "split" / "last.safetensors")
    for k in a:
        if k.startswith("model/"):
            assert torch.equal(a[k], b[k]), k
    assert straight["test"] == resumed["test"]
    # And the augmentation did change training: without it the weights differ.
    train_run(from_preset("fast", **{**cfg, "augment": ""}), tmp_path / "plain", verbose=0)
    c, _ = read(tmp_path / "plain" / "last.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a if k.startswith("model/"))


def test_cli_train_with_augment_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    # Heavy augmentation on 3,000 images: the preset's batch of 256 would give only 12 steps an epoch, so
    # 3 epochs at batch 100 (90 steps) show it learns well past chance (69% here).
    r = run_cli("train", "--preset", "fast", "--epochs", "3", "--limit-train", "3000", "--limit-test", "1000", "--out", str(run), "--quiet",
                "--batch-size", "100", "--lr", "3e-3", "--augment", "rotation=45,shift=0.15,zoom=0.5,shear=0,flip=none")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (
        json.loads((run / "config.json").read_text())["augment"] == "rotation=45,shift=0.15,zoom=0.5,shear=0,flip=none"
    )
    assert json.loads((run / "result.json").read_text())["test"]["sparse_categorical_accuracy"] > 0.5
    # A bad spec, through the same CLI code in-process (a second interpreter start costs seconds).
    rc = main(["train", "--preset", "fast", "--epochs", "1", "--limit-train", "100", "--out", str(tmp_path / "x"),
               "--augment", "rotation=400"])  # fmt: skip
    assert rc == 2
    assert (
        capsys.readouterr().err.strip() == "mnistlab: error: augment: rotation must lie in [0, 180] degrees, got 400.0"
    )


def test_preview_images_and_cli(tmp_path, capsys):
    x = np.asarray(load("mnist").x_train[:3])
    grid = preview_images(x, "rotation=30,shift=0.1", versions=4, seed=1)
    assert grid.shape == (15, 28, 28) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[::5], x)  # each row starts with its original
    assert not np.array_equal(grid[1], x[0])
    np.testing.assert_array_equal(preview_images(x, "rotation=30,shift=0.1", versions=4, seed=1), grid)
    out = tmp_path / "preview.png"
    rc = main(["augment", "preview", "--dataset", "mnist", "--augment", "rotation=45,shift=0.15,zoom=0.5",
               "--count", "4", "--versions", "5", "-o", str(out)])  # fmt: skip
    assert rc == 0 and "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
