"""Model presets and the Keras-like summary."""

from __future__ import annotations

import pytest
import torch

from mnistlab.errors import ConfigError
from mnistlab.models import MODELS, build_model, count_params, from_spec, mlp, summary


def test_mlp_is_the_lessons_model() -> None:
    model = mlp()
    assert count_params(model) == 101_770
    table = summary(model)
    lines = table.splitlines()
    assert lines[0] == 'Model: "mlp"'
    assert any("(None, 784)" in line for line in lines)
    assert any("(None, 128)" in line and line.rstrip().endswith("100,480") for line in lines)
    assert any("(None, 10)" in line and line.rstrip().endswith("1,290") for line in lines)
    assert " Total params: 101,770" in lines


def test_standardize_adds_no_parameters() -> None:
    model = mlp(normalize=[0.1307, 0.3081])
    assert count_params(model) == 101_770
    x = torch.rand(2, 1, 28, 28)
    plain = mlp()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("0.")}, strict=False)
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_presets_forward_and_rebuild_from_spec(name: str, in_shape: tuple[int, int, int]) -> None:
    model = build_model(name, in_shape=in_shape, num_classes=7)
    out = model(torch.rand(3, *in_shape))
    assert out.shape == (3, 7)
    again = from_spec(model.spec)
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    x = torch.rand(2, *in_shape)
    assert torch.equal(model(x), again(x))


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        build_model("resnet")


def test_config_names_every_model_preset() -> None:
    from mnistlab.config import MODEL_NAMES
    from mnistlab.models import MODELS

    assert tuple(MODELS) == MODEL_NAMES


def test_forward_flops_count_convolutions_and_dense_layers_by_hand() -> None:
    from torch import nn

    from mnistlab.models import forward_flops, training_flops

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 8, 3, groups=2), nn.Flatten(), nn.Linear(8 * 12 * 12, 10))  # fmt: skip
    conv1 = 2 * (4 * 28 * 28) * (1 * 3 * 3)
    conv2 = 2 * (8 * 12 * 12) * (2 * 3 * 3)  # two groups: each output sees half the input channels
    dense = 2 * 10 * (8 * 12 * 12)
    assert forward_flops(net) == conv1 + conv2 + dense
    assert training_flops(net, 1000) == 3 * 1000 * (conv1 + conv2 + dense)
    assert net.training  # counted in eval mode, handed back as it came
