"""The tutorial's lessons about torch.nn.Module, each proved on minitorch_nn's modules.

These are the questions the tutorial asks (what breaks without ``super().__init__()``, why
``ModuleList`` and not a list, ``model(x)`` versus ``model.forward(x)``, why the output layer
has no activation), answered by running code rather than by assertion in prose.
"""

from __future__ import annotations

import pytest
import torch

import minitorch_nn.nn as nn


def test_forgetting_super_init_breaks_layer_assignment():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)  # no super().__init__(): Module's registries do not exist

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call"):
        Broken()


def test_module_list_registers_parameters_a_plain_list_hides_them():
    class WithModuleList(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2)])

    class WithList(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(4, 4), nn.Linear(4, 2)]

    assert len(list(WithModuleList().parameters())) == 4  # two weights, two biases
    assert list(WithList().parameters()) == []  # the optimizer would train nothing
    assert WithList().state_dict() == {}  # ...and saving would save nothing


def test_calling_the_model_runs_hooks_calling_forward_directly_skips_them():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append("hook"))
    x = torch.randn(2, 3)
    model(x)
    assert calls == ["hook"]
    model.forward(x)
    assert calls == ["hook"], "forward() bypasses __call__, and with it every hook"


def test_a_model_written_against_minitorch_nn_loads_a_torch_nn_state_dict():
    def build(ns):
        return ns.Sequential(ns.Linear(8, 16), ns.GELU(), ns.Dropout(0.1), ns.Linear(16, 3))

    theirs = build(torch.nn).eval()
    ours = build(nn).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 8)
    torch.testing.assert_close(ours(x), theirs(x))


def test_the_output_layer_has_no_activation_because_the_loss_applies_it():
    # (torch's cross_entropy stands in until the reference losses land.)
    # A classifier returns raw logits: cross-entropy applies log-softmax itself, stably. A
    # softmax in the model, then log inside the loss, underflows to log(0) = -inf for a
    # confident wrong prediction; the fused form gives the exact finite loss.
    logits = torch.tensor([[200.0, 0.0]])
    target = torch.tensor([1])
    fused = torch.nn.functional.cross_entropy(logits, target)
    probabilities = torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()
    unfused = -torch.log(probabilities[0, 1])
    assert fused.item() == pytest.approx(200.0)
    assert torch.isinf(unfused)
