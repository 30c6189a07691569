"""The inference-only forward pass computes what the U-net computes."""

from __future__ import annotations

import pytest
import torch

from tofmra_utils.unet.inference_net import InferenceUNet
from tofmra_utils.unet.model import UNet


@pytest.mark.parametrize("placement", ["deep", "every_block"])
@pytest.mark.parametrize(("base_width", "depth", "size"), [(4, 4, 32), (3, 2, 12), (2, 3, 40)])
def test_equals_the_unet_in_evaluation_mode(placement, base_width, depth, size):
    torch.manual_seed(0)
    model = UNet(1, base_width=base_width, depth=depth, dropout=0.3, dropout_placement=placement).eval()
    for p in model.parameters():  # non-zero biases too, so a dropped bias would show
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(5, 1, size, size)
    with torch.inference_mode():
        expected = model(x)
        got = InferenceUNet(model)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_copy_of_the_weights_in_the_models_own_layout():
    model = UNet(1, base_width=2, depth=2, dropout=0.0).eval()
    net = InferenceUNet(model)
    assert all(p.is_contiguous() for p in model.parameters())
    with torch.no_grad():
        model.outc.conv.bias.add_(3.0)  # a later change to the model is not seen by the prepared copy
    x = torch.randn(2, 1, 8, 8)
    with torch.inference_mode():
        assert not torch.allclose(net(x), model(x))


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_a_transposed_convolution_replaces_upsampling_then_convolution(size):
    import torch.nn.functional as F

    from tofmra_utils.unet.inference_net import upsampled_conv_as_transposed

    torch.manual_seed(size)
    weight, h = torch.randn(4, 3, 3, 3), torch.randn(2, 3, size, size)
    expected = F.conv2d(F.interpolate(h, scale_factor=2.0, mode="nearest"), weight, padding=1)
    got = F.conv_transpose2d(h, upsampled_conv_as_transposed(weight), stride=2, padding=1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="3, 3"):
        upsampled_conv_as_transposed(torch.randn(4, 3, 5, 5))
