"""The tutorial's models: parameter counts, shapes, logits out, init schemes, torch-compatible state."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import minitorch_nn.nn as nn
from minitorch_nn.models import ConvBlock, FlexibleMLP, ResidualBlock, SmallCNN, make_activation


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- parameter counts against the formulas ------------------------------------------------


@pytest.mark.parametrize(
    ("hidden", "norm"),
    [([], None), ([64], None), ([128, 64], None), ([256, 128, 64, 32], "batch"), ([32, 16], "layer")],
)
def test_mlp_parameter_count_is_the_sum_of_its_layers(hidden, norm):
    i, o = 20, 7
    expected, width = 0, i
    for h in hidden:
        if norm == "batch":  # Linear without bias (BN's shift replaces it), BN's γ and β
            expected += width * h + 2 * h
        elif norm == "layer":  # Linear with bias, LayerNorm's γ and β
            expected += width * h + h + 2 * h
        else:
            expected += width * h + h
        width = h
    expected += width * o + o
    assert n_params(FlexibleMLP(i, hidden, o, norm=norm, dropout=0.1)) == expected


def conv_block_params(c_in, c_out, k=3):
    return c_out * c_in * k * k + 2 * c_out  # bias-free conv, BN's γ and β


def residual_params(c_in, c_out, stride):
    projection = c_in * c_out + 2 * c_out if (stride != 1 or c_in != c_out) else 0
    return conv_block_params(c_in, c_out) + conv_block_params(c_out, c_out) + projection


def test_conv_block_parameter_count_has_no_conv_bias():
    block = ConvBlock(3, 16, kernel_size=5)
    assert n_params(block) == 16 * 3 * 25 + 2 * 16
    assert block.conv.bias is None


@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(16, 16, 1), (16, 32, 1), (16, 16, 2), (8, 32, 2)])
def test_residual_block_parameter_count_includes_the_projection_only_when_shapes_change(c_in, c_out, stride):
    block = ResidualBlock(c_in, c_out, stride)
    assert n_params(block) == residual_params(c_in, c_out, stride)
    assert isinstance(block.shortcut, nn.Identity) == (stride == 1 and c_in == c_out)


def test_small_cnn_parameter_count():
    model = SmallCNN(in_channels=3, num_classes=10, widths=(16, 32, 64))
    expected = (
        conv_block_params(3, 16)
        + residual_params(16, 16, 1)
        + residual_params(16, 32, 2)
        + residual_params(32, 64, 2)
        + 64 * 10
        + 10  # head: Linear(64, 10) after global average pooling
    )
    assert n_params(model) == expected
    assert n_params(SmallCNN()) == 19_706  # the digits example's model


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(8, 8), (5, 13), (1, 1), (32, 17), (2, 3)])
def test_small_cnn_accepts_any_input_resolution(hw):
    model = SmallCNN(in_channels=2, num_classes=5, widths=(4, 8, 8))
    assert model(torch.randn(2, 2, *hw)).shape == (2, 5)


@pytest.mark.parametrize(("hw", "stride", "expected"), [((8, 8), 1, (8, 8)), ((9, 6), 2, (5, 3)), ((7, 1), 2, (4, 1))])
def test_blocks_keep_the_size_at_stride_1_and_halve_it_rounding_up_at_stride_2(hw, stride, expected):
    x = torch.randn(2, 3, *hw)
    assert ConvBlock(3, 4, stride=stride)(x).shape == (2, 4, *expected)
    assert ResidualBlock(3, 4, stride=stride)(x).shape == (2, 4, *expected)


def test_mlp_accepts_extra_leading_dimensions_without_batch_norm():
    assert FlexibleMLP(6, [5], 3, norm="layer")(torch.randn(2, 4, 6)).shape == (2, 4, 3)


# --- the output is logits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_and_input",
    [
        (lambda: FlexibleMLP(10, [32, 32], 4, activation="sigmoid"), (16, 10)),
        (lambda: SmallCNN(1, 4, (4, 8)), (16, 1, 6, 6)),
    ],
    ids=["mlp", "cnn"],
)
def test_the_output_is_the_last_linear_layer_unchanged_no_activation(model_and_input):
    build, shape = model_and_input
    torch.manual_seed(0)
    model = build()
    last = model.output if isinstance(model, FlexibleMLP) else model.fc
    seen = []
    last.register_forward_hook(lambda module, args, out: seen.append(out))
    out = model(torch.randn(*shape) * 5)
    assert out is seen[0], "something runs after the last Linear layer"
    # Raw scores: negative values, rows that do not sum to 1 (no softmax, no sigmoid, no ReLU).
    assert (out < 0).any()
    assert not torch.allclose(out.sum(1), torch.ones(len(out)))


def test_hidden_block_order_is_linear_norm_activation_dropout():
    block = FlexibleMLP(8, [16], 2, activation="gelu", dropout=0.2, norm="batch").hidden[0]
    assert [type(m) for m in block] == [nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Dropout]
    assert block[0].bias is None  # BatchNorm's mean subtraction would cancel it


def test_activation_by_name_class_or_factory_builds_a_fresh_module_per_layer():
    model = FlexibleMLP(4, [4, 4], 2, activation=functools.partial(nn.LeakyReLU, 0.2))
    a, b = model.hidden[0][1], model.hidden[1][1]
    assert isinstance(a, nn.LeakyReLU)
    assert a.negative_slope == 0.2
    assert a is not b
    assert isinstance(make_activation(nn.Tanh), nn.Tanh)
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("swish!")
    with pytest.raises(TypeError, match="not an instance"):
        make_activation(nn.ReLU())


# --- initialisation ---------------------------------------------------------------------------

FAN_IN, FAN_OUT = 512, 256


def uniform_bound_and_std_tol(w: torch.Tensor) -> float:
    """Relative standard error of the sample std of n uniform draws is √((9/5 − 1)/n) / 2; allow 5 of them."""
    return 5 * math.sqrt(0.8 / w.numel()) / 2


@pytest.mark.parametrize(
    ("init", "activation", "bound"),
    [
        ("default", "relu", 1 / math.sqrt(FAN_IN)),  # torch.nn.Linear's U(±1/√fan_in)
        ("xavier", "tanh", 5 / 3 * math.sqrt(6 / (FAN_IN + FAN_OUT))),  # gain(tanh) = 5/3
        ("xavier", "sigmoid", math.sqrt(6 / (FAN_IN + FAN_OUT))),
        ("kaiming", "relu", math.sqrt(6 / FAN_IN)),  # gain(relu)² = 2: √3·√2/√fan_in
        ("kaiming", "gelu", math.sqrt(6 / FAN_IN)),  # ReLU-like: ReLU's gain
        ("kaiming", "leaky_relu", math.sqrt(3 * 2 / (1 + 0.01**2) / FAN_IN)),
    ],
)
def test_init_scheme_sets_the_hidden_weights_range_and_spread(init, activation, bound):
    torch.manual_seed(0)
    w = FlexibleMLP(FAN_IN, [FAN_OUT], 10, activation=activation, init=init).hidden[0][0].weight.detach().double()
    assert float(w.abs().max()) <= bound
    assert float(w.abs().max()) > 0.99 * bound  # 131k draws reach the edge of the range
    std = float(w.std())
    assert std == pytest.approx(bound / math.sqrt(3), rel=uniform_bound_and_std_tol(w))  # U(±a) has std a/√3


def test_output_layer_is_initialised_for_no_activation():
    torch.manual_seed(0)
    kaiming = FlexibleMLP(FAN_IN, [FAN_IN], FAN_OUT, init="kaiming").output.requires_grad_(False)
    xavier = FlexibleMLP(FAN_IN, [FAN_IN], FAN_OUT, init="xavier").output.requires_grad_(False)
    # 'linear' gain 1: kaiming bound √(3/fan_in), xavier bound √(6/(fan_in + fan_out)).
    assert float(kaiming.weight.abs().max()) <= math.sqrt(3 / FAN_IN)
    assert float(kaiming.weight.abs().max()) > 0.99 * math.sqrt(3 / FAN_IN)
    assert float(xavier.weight.abs().max()) <= math.sqrt(6 / (FAN_IN + FAN_OUT))
    assert not kaiming.bias.any()
    assert not xavier.bias.any()


def test_with_the_activations_gain_xavier_and_he_coincide_on_a_square_layer():
    # Xavier: gain·√(6/(fan_in + fan_out)); He: gain·√(3/fan_in). Equal when fan_in = fan_out:
    # they differ only in averaging the two fans. Both are √6 times torch's default 1/√fan_in (ReLU).
    def weights(init):
        torch.manual_seed(0)
        return FlexibleMLP(FAN_IN, [FAN_IN], 2, init=init).hidden[0][0].weight.detach()

    torch.testing.assert_close(weights("xavier"), weights("kaiming"), rtol=2**-23, atol=0)
    # 262,144 draws reach within 1% of the bound (P(all below 0.99·bound) = 0.99^262144 ≈ 0).
    ratio = float(weights("kaiming").abs().max() / weights("default").abs().max())
    assert ratio == pytest.approx(math.sqrt(6), rel=0.0101)


def test_default_init_is_torchs_own_bit_for_bit():
    torch.manual_seed(0)
    ours = FlexibleMLP(12, [8], 3, init="default")
    torch.manual_seed(0)
    theirs = torch.nn.ModuleDict(
        {"hidden": torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(12, 8))]), "output": torch.nn.Linear(8, 3)}
    )
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# --- state_dict against hand-written torch.nn equivalents --------------------------------------


class TorchMLP(torch.nn.Module):
    """FlexibleMLP(in, hidden, out, norm='batch', dropout=p) written with torch.nn by hand."""

    def __init__(self, i, hidden, o, p):
        super().__init__()
        self.hidden = torch.nn.ModuleList()
        for h in hidden:
            self.hidden.append(
                torch.nn.Sequential(
                    torch.nn.Linear(i, h, bias=False), torch.nn.BatchNorm1d(h), torch.nn.ReLU(), torch.nn.Dropout(p)
                )
            )
            i = h
        self.output = torch.nn.Linear(i, o)

    def forward(self, x):
        for block in self.hidden:
            x = block(x)
        return self.output(x)


class TorchConvBlock(torch.nn.Module):
    def __init__(self, i, o, stride=1, act=True):
        super().__init__()
        self.conv = torch.nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(o)
        self.act = torch.nn.ReLU() if act else torch.nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class TorchResidualBlock(torch.nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.block1 = TorchConvBlock(i, o, stride)
        self.block2 = TorchConvBlock(o, o, 1, act=False)
        if stride == 1 and i == o:
            self.shortcut = torch.nn.Identity()
        else:
            self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(i, o, 1, stride, bias=False), torch.nn.BatchNorm2d(o))
        self.act = torch.nn.ReLU()

    def forward(self, x):
        return self.act(self.block2(self.block1(x)) + self.shortcut(x))


class TorchSmallCNN(torch.nn.Module):
    def __init__(self, c, classes, widths):
        super().__init__()
        self.stem = TorchConvBlock(c, widths[0])
        self.stages = torch.nn.Sequential(
            *(
                TorchResidualBlock(a, b, 1 if k == 0 else 2)
                for k, (a, b) in enumerate(zip((widths[0], *widths[:-1]), widths, strict=True))
            )
        )
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(widths[-1], classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def _train_a_little(model, x):
    """A few training-mode forwards, so the running statistics are not the initial 0 and 1."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)


@pytest.mark.parametrize(
    ("ours", "theirs", "shape"),
    [
        (
            lambda: FlexibleMLP(10, [16, 8], 3, norm="batch", dropout=0.3, init="xavier"),
            lambda: TorchMLP(10, [16, 8], 3, 0.3),
            (6, 10),
        ),
        (lambda: SmallCNN(2, 5, (4, 8)), lambda: TorchSmallCNN(2, 5, (4, 8)), (3, 2, 7, 9)),
    ],
    ids=["mlp", "cnn"],
)
def test_state_dict_loads_into_the_equivalent_torch_model_and_back(ours, theirs, shape):
    torch.manual_seed(0)
    ours, theirs = ours().double(), theirs().double()
    x = torch.randn(*shape, dtype=torch.float64)
    _train_a_little(ours, x)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # same keys, same order
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    # float64: the two sides differ only in summation order, ~1e-15 relative; a wrong or
    # misplaced weight changes the output at O(1).
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)
    ours2 = type(ours)(*_ctor_args(ours)).double()
    ours2.load_state_dict(theirs.state_dict())
    for (k, a), b in zip(ours2.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def _ctor_args(model):
    if isinstance(model, FlexibleMLP):
        return (model.in_features, list(model.hidden_sizes), model.out_features, "relu", 0.3, "batch")
    return (2, 5, (4, 8))
