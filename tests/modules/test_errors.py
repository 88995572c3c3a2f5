"""Bad input gets an error that says what was expected."""

import pytest
import torch

from liquid_s4 import LSSL, S4, S4D

LAYERS = (S4D, S4, LSSL)


@pytest.mark.parametrize("cls", LAYERS)
def test_wrong_rank_and_channels(cls):
    layer = cls(4, 8)
    with pytest.raises(ValueError, match=r"3-d input \(B, L, H\)"):
        layer(torch.randn(10, 4))
    with pytest.raises(ValueError, match="expected 4 channels"):
        layer(torch.randn(2, 10, 5))
    with pytest.raises(ValueError, match="transposed"):
        layer(torch.randn(2, 4, 10))  # (B, H, L) given to a (B, L, H) layer


@pytest.mark.parametrize("cls", LAYERS)
def test_integer_and_non_tensor_input(cls):
    layer = cls(4, 8)
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 10, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([[1.0]])
    with pytest.raises(TypeError, match="floating-point"):
        layer.step(torch.ones(2, 4, dtype=torch.int32), layer.default_state(2))


@pytest.mark.parametrize("cls", (S4D, S4))
def test_odd_state_rejected_where_unsupported(cls):
    with pytest.raises(ValueError, match="d_state must be even"):
        cls(4, 7)


def test_odd_state_allowed_for_lssl():
    y, _ = LSSL(4, 7)(torch.randn(1, 9, 4))
    assert y.shape == (1, 9, 4)


@pytest.mark.parametrize("cls", LAYERS)
def test_l_max(cls):
    layer = cls(4, 8, l_max=16)
    layer(torch.randn(1, 16, 4))
    with pytest.raises(ValueError, match="exceeds l_max=16"):
        layer(torch.randn(1, 17, 4))
    with pytest.raises(ValueError, match="l_max must be"):
        cls(4, 8, l_max=0)


@pytest.mark.parametrize("cls", LAYERS)
def test_invalid_hyperparameters(cls):
    with pytest.raises(ValueError, match="unknown init 'nope'; expected one of"):
        cls(4, 8, init="nope")
    with pytest.raises(ValueError, match="unsupported disc 'euler'; expected one of"):
        cls(4, 8, disc="euler")
    with pytest.raises(ValueError, match="0 < dt_min <= dt_max"):
        cls(4, 8, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="d_model must be a positive integer"):
        cls(0, 8)
    with pytest.raises(ValueError, match="unknown activation"):
        cls(4, 8, activation="softplus2")
    with pytest.raises(ValueError, match="dropout"):
        cls(4, 8, dropout=1.5)


def test_s4_zoh_explains_alternative():
    with pytest.raises(ValueError, match="unsupported disc 'zoh'; expected one of \\('bilinear',\\)"):
        S4(4, 8, disc="zoh")


@pytest.mark.parametrize("cls", LAYERS)
def test_state_and_step_errors(cls):
    layer = cls(4, 8)
    with pytest.raises(ValueError, match="expected a .* state of shape"):
        layer(torch.randn(2, 5, 4), state=torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 4\)"):
        layer.step(torch.randn(2, 5, 4), layer.default_state(2))
    bi = cls(4, 8, bidirectional=True)
    with pytest.raises(RuntimeError, match="bidirectional"):
        bi.step(torch.randn(2, 4), bi.default_state(2))
    with pytest.raises(ValueError, match="bidirectional"):
        bi(torch.randn(2, 5, 4), state=bi.default_state(2))


@pytest.mark.parametrize("cls", LAYERS)
def test_lengths_errors(cls):
    layer = cls(4, 8)
    u = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\]"):
        layer(u, lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match=r"integer tensor of shape \(2,\)"):
        layer(u, lengths=torch.tensor([1.0, 2.0]))
