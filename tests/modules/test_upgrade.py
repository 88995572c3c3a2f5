"""Weights written before the layers were built from parts (SSM parameters on the layer, D beside
them, the projection in `output_linear`) load into the current layers and compute the same outputs.

The fixtures were written by the library as it was then (tests/fixtures/README.md): per layer kind,
its state dict, the output for a stored input, and the order of its parameters; and one saved
`SequenceModel` folder with its expected output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import liquid_s4
from liquid_s4 import SequenceModel
from liquid_s4.modules import upgrade_state_dict

FIXTURES = Path(__file__).parent.parent / "fixtures"
META = json.loads((FIXTURES / "layers_0_1.json").read_text())
TENSORS = load_file(FIXTURES / "layers_0_1.safetensors")


def _old_layer(name: str):
    meta = META[name]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["kwargs"].items()}
    layer = getattr(liquid_s4, meta["class"])(**kwargs).double()
    state = {k.split("/", 1)[1]: v for k, v in TENSORS.items() if k.startswith(name + "/") and "//" not in k}
    return layer, state


@pytest.mark.parametrize("name", sorted(META))
def test_state_dict_of_the_earlier_layout_loads_and_computes_the_same(name):
    layer, state = _old_layer(name)
    assert "D" in state and not any(k.startswith("ssm.") for k in state)  # the old layout
    layer.load_state_dict(state)  # strict
    y, _ = layer(TENSORS["input"])
    assert torch.allclose(y, TENSORS[f"{name}//output"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(META))
def test_parameters_keep_their_order(name):
    """An optimizer's saved state is matched to parameters by position: a run checkpointed before
    resumes with each moment buffer on the parameter it belongs to."""
    layer, _ = _old_layer(name)
    assert [list(p.shape) for p in layer.parameters()] == META[name]["parameter_shapes"]


def test_upgrade_leaves_current_state_dicts_alone():
    layer, state = _old_layer("s4")
    upgrade_state_dict(state, "")
    assert set(state) == set(layer.state_dict())
    again = dict(state)
    upgrade_state_dict(again, "")
    assert again.keys() == state.keys() and all(again[k] is state[k] for k in state)


def test_saved_model_of_the_earlier_layout_loads():
    model = SequenceModel.from_pretrained(FIXTURES / "model_0_1").eval()
    expected = torch.load(FIXTURES / "model_0_1" / "expected.pt")
    with torch.no_grad():
        y = model(expected["input"])
    assert torch.allclose(y, expected["output"], rtol=0, atol=1e-6)


def test_layers_pickled_by_the_earlier_layout_are_refused_with_advice():
    layer = liquid_s4.S4D(4, 8)
    state = layer.__getstate__()
    old = {**state, "_modules": {k: v for k, v in state["_modules"].items() if k != "ssm"}}
    with pytest.raises(TypeError, match="load its state_dict instead"):
        liquid_s4.S4D.__new__(liquid_s4.S4D).__setstate__(old)
