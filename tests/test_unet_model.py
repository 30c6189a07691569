"""U-net architecture: shapes, patch-size checks, the study's block structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tofmra_utils.unet.model import WEIGHT_INITS, UNet, check_patch_size
from tofmra_utils.unet.parts import DoubleConv, Down, Up




@pytest.mark.parametrize("size", [32, 64, 96])
@pytest.mark.parametrize("base_width", [2, 3])
def test_output_shape_and_range(size, base_width):
    torch.manual_seed(0)
    model = UNet(in_channels=1, base_width=base_width, depth=4, dropout=0.1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 1, size, size)
    # sigmoid probabilities (float32 rounds a large He-initialized logit to exactly 0 or 1)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 and float(out.std()) > 0


def test_widths_double_per_level():
    model = UNet(base_width=4, depth=4)
    enc = [model.inc, *model.downs]
    widths = [m.block[2].out_channels if isinstance(m, DoubleConv) else m.conv.block[2].out_channels for m in enc]
    assert widths == [4, 8, 16, 32, 64]
    # Decoder mirrors the encoder back to the base width, then a 1x1 conv to one channel.
    assert [up.conv.block[2].out_channels for up in model.ups] == [32, 16, 8, 4]
    assert model.outc.conv.kernel_size == (1, 1) and model.outc.conv.out_channels == 1


def test_no_batch_norm_and_dropout_only_in_deepest_levels():
    model = UNet(base_width=2, depth=4, dropout=0.3)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    has_dropout = [any(isinstance(m, nn.Dropout) for m in d.modules()) for d in model.downs]
    assert has_dropout == [False, False, True, True]
    assert not any(isinstance(m, nn.Dropout) for m in model.inc.modules())
    assert not any(isinstance(m, nn.Dropout) for up in model.ups for m in up.modules())
    assert not any(isinstance(m, nn.Dropout) for m in UNet(base_width=2, depth=4, dropout=0.0).modules())


def test_parts_shapes():
    x = torch.randn(1, 3, 16, 16)
    assert DoubleConv(3, 5)(x).shape == (1, 5, 16, 16)
    assert Down(3, 6)(x).shape == (1, 6, 8, 8)
    assert Up(6, 3, 4)(torch.randn(1, 6, 8, 8), x).shape == (1, 4, 16, 16)


@pytest.mark.parametrize("size", [40, 8, 0, 100])
def test_bad_patch_size_is_a_clear_error(size):
    with pytest.raises(ValueError, match=r"multiple of 2\*\*4 = 16"):
        check_patch_size(size, 4)


def test_forward_rejects_bad_input_shapes():
    model = UNet(base_width=2, depth=4)
    with pytest.raises(ValueError, match="multiple of"):
        model(torch.randn(1, 1, 40, 32))
    with pytest.raises(ValueError, match=r"expected input \(B, 1, H, W\)"):
        model(torch.randn(1, 2, 32, 32))


def test_depth_changes_the_size_rule():
    model = UNet(base_width=2, depth=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 12, 20)).shape == (1, 1, 12, 20)  # 2**2 = 4 divides both


def test_encoder_modules_are_the_contracting_path():
    model = UNet(base_width=2, depth=3)
    enc_params = {id(p) for m in model.encoder_modules() for p in m.parameters()}
    dec_params = {id(p) for m in (model.ups, model.outc) for p in m.parameters()}
    assert enc_params and dec_params and not enc_params & dec_params
    assert enc_params | dec_params == {id(p) for p in model.parameters()}


def test_weight_init_schemes_set_the_initial_signal():
    """He init keeps the output input-dependent through the 19 convolutions; PyTorch's default does not.

    This is what kept course runs from scratch on the soft-Dice plateau (an empty prediction
    after a short budget): with the default the logits barely vary at all at initialization.
    """
    x = torch.randn(8, 1, 32, 32)
    spread = {}
    for scheme in WEIGHT_INITS:
        torch.manual_seed(0)
        model = UNet(1, 16, 4, 0.1, weight_init=scheme).eval()
        with torch.no_grad():
            spread[scheme] = float(model.logits(x).std())
    assert spread["he"] > 0.3, spread
    assert spread["torch"] < 0.05 and spread["glorot"] < spread["he"] / 4, spread


def test_he_init_draws_kaiming_normal_weights_and_zero_biases():
    torch.manual_seed(0)
    model = UNet(1, 16, 4, 0.0, weight_init="he")
    conv = model.downs[2].conv.block[0]  # 64 -> 128 channels, fan_in 576
    expected = (2.0 / conv.weight[0].numel()) ** 0.5
    assert abs(float(conv.weight.detach().std()) - expected) < 0.05 * expected
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in model.modules() if isinstance(m, nn.Conv2d))


def test_unknown_weight_init_is_an_error():
    with pytest.raises(ValueError, match="unknown weight initialization 'orthogonal'"):
        UNet(1, 4, 2, weight_init="orthogonal")


def test_dropout_placement_study_way_is_between_the_convolutions_of_every_block():
    from torch import nn

    deep = UNet(1, 4, 3, dropout=0.2)
    every = UNet(1, 4, 3, dropout=0.2, dropout_placement="every_block")
    count = lambda m: sum(isinstance(x, nn.Dropout) for x in m.modules())  # noqa: E731
    assert count(deep) == 2 and count(every) == 1 + 3 + 3, "inc, 3 downs and 3 ups"
    block = list(every.inc.block)
    assert isinstance(block[2], nn.Dropout) and isinstance(block[3], nn.Conv2d), "dropout between the two convs"
    assert every.architecture()["dropout_placement"] == "every_block"
    rebuilt = UNet(**every.architecture())
    rebuilt.load_state_dict(every.state_dict())
    with pytest.raises(ValueError, match="dropout placement"):
        UNet(1, 4, 3, dropout_placement="decoder")
