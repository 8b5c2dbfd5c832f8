"""U-Net: size of the published network, initialisation, time conditioning and precision."""

from __future__ import annotations

import pytest
import torch

from mddpm.nets import UNet, count_parameters

DEMO = dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, groups=8)
TINY = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, groups=4, head_channels=16)


def randomise(net: UNet, seed: int = 0) -> UNet:
    """Give every parameter (also the zero-initialised ones) small random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return net


def test_paper_preset_has_the_published_parameter_count():
    with torch.device("meta"):
        paper = UNet()  # 128, (1, 2, 2), 3 blocks, scale-shift: mDDPM / pDDPM
        ddpm = UNet(scale_shift_norm=False)  # the unpatched DDPM baseline
    assert count_parameters(paper) == 37_513_857
    assert abs(count_parameters(paper) - 37.5e6) / 37.5e6 < 0.01
    assert abs(count_parameters(ddpm) - 34.5e6) / 34.5e6 < 0.01
    # scale-shift doubles the embedding projection of each ResBlock: the difference is exactly those
    resblock_widths = [m.out_norm.num_channels for m in paper.modules() if hasattr(m, "emb_proj")]
    assert count_parameters(paper) - count_parameters(ddpm) == sum((512 + 1) * c for c in resblock_widths)


def test_count_parameters_trainable_only():
    net = UNet(**TINY)
    net.time_embed.requires_grad_(False)
    frozen = count_parameters(net.time_embed)
    assert count_parameters(net, trainable_only=True) == count_parameters(net) - frozen


@pytest.mark.parametrize("kwargs", [DEMO, dict(TINY, scale_shift_norm=False, resblock_updown=False)])
def test_forward_shape_and_zero_output_at_init(kwargs):
    net = UNet(**kwargs)
    x = torch.rand(3, 1, 32, 32)
    out = net(x, torch.tensor([0, 499, 999]))
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv
    assert all(torch.count_nonzero(p) == 0 for p in net.out[-1].parameters())


def test_multi_channel_and_float_timesteps():
    net = randomise(UNet(in_channels=2, out_channels=3, **TINY))
    out = net(torch.rand(2, 2, 16, 16), torch.tensor([10.0, 10.5]))
    assert out.shape == (2, 3, 16, 16)
    assert not torch.allclose(out[0], out[1])  # different inputs and fractional timestep handled


def test_time_embedding_changes_the_output_after_training_steps():
    torch.manual_seed(0)
    net = UNet(**TINY)
    x = torch.rand(4, 1, 16, 16)
    t = torch.tensor([0, 300, 600, 999])
    same = x[:1].expand(2, -1, -1, -1)
    before = net(same, torch.tensor([0, 999]))
    assert torch.equal(before[0], before[1])  # at init the output (zero) ignores t
    for _ in range(3):  # plain SGD; zero-init: output conv first, then the ResBlocks' last convs move
        net.zero_grad()
        (net(x, t) - x).abs().mean().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.1 * p.grad
    after = net(same, torch.tensor([0, 999]))
    assert (after[0] - after[1]).abs().max() > 1e-4


def test_input_size_must_divide_by_the_downsampling():
    net = UNet(**DEMO)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.rand(1, 1, 30, 32), torch.tensor([1]))


def test_checkpointing_gives_the_same_gradients():
    plain = randomise(UNet(**TINY)).train()
    ckpt = UNet(**TINY, checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t = torch.rand(2, 1, 16, 16), torch.tensor([3, 700])
    for net in (plain, ckpt):
        net(x, t).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_channels_last_and_bf16_autocast():
    net = randomise(UNet(**TINY)).eval()
    x, t = torch.rand(2, 1, 16, 16), torch.tensor([3, 700])
    ref = net(x, t)
    net_cl = net.to(memory_format=torch.channels_last)
    out_cl = net_cl(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf = net_cl(x.to(memory_format=torch.channels_last), t)
    assert out_bf.dtype == torch.bfloat16
    assert (out_bf.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_follows_the_input_device_meta():
    with torch.device("meta"):
        net = UNet(**DEMO)
    out = net(torch.zeros(2, 1, 32, 32, device="meta"), torch.zeros(2, dtype=torch.long, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 1, 32, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_matches_fp32():
    net = randomise(UNet(**DEMO)).eval()
    x, t = torch.rand(4, 1, 96, 96), torch.tensor([0, 250, 499, 999])
    ref = net(x, t)
    net = net.cuda().to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(x.cuda().to(memory_format=torch.channels_last), t.cuda())
    assert (out.float().cpu() - ref).abs().max() < 0.05 * ref.abs().max()
