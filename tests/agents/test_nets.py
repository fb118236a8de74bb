"""nets.Chain: a drop-in for nn.Sequential (same outputs, same checkpoint keys); the conv nets'
channels-last training layout and the optimizer state that must follow it."""

import copy

import torch
from torch import nn

from embodied.agents.nets import (
    MLP,
    Chain,
    ConvDecoder,
    ConvEncoder,
    frames_to_tensor,
    match_layouts,
)


def test_chain_matches_sequential_outputs_gradients_and_keys():
    torch.manual_seed(0)
    layers = [nn.Linear(5, 7), nn.SiLU(), nn.LayerNorm(7), nn.Linear(7, 3)]
    chain, seq = Chain(*layers), nn.Sequential(*layers)  # the same modules in both
    x = torch.randn(4, 5, requires_grad=True)
    out_chain, out_seq = chain(x), seq(x)
    assert torch.equal(out_chain, out_seq)
    (g_chain,) = torch.autograd.grad(out_chain.sum(), x)
    (g_seq,) = torch.autograd.grad(out_seq.sum(), x)
    assert torch.equal(g_chain, g_seq)
    assert list(chain.state_dict()) == list(seq.state_dict())


def test_mlp_loads_a_sequential_checkpoint():
    mlp = MLP(3, 2, (8,))
    seq = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 2))
    mlp.load_state_dict(seq.state_dict())  # strict: fails on any renamed key
    x = torch.randn(6, 3)
    assert torch.equal(mlp(x), seq(x))


def test_conv_nets_train_channels_last_and_evaluate_in_the_default_layout():
    enc, dec = ConvEncoder(16, 8, 4), ConvDecoder(8, 16, 4)
    convs = [p for m in (enc, dec) for p in m.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)  # built for evaluation
    reference = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.train(), dec.train()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(not p.is_contiguous() for p in convs)
    enc.eval(), dec.eval()
    assert all(p.is_contiguous() for p in convs)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, reference[k]), k  # same values in either layout


def test_match_layouts_keeps_fused_adam_exact_across_layouts():
    """State saved while a weight was laid out one way, stepped while laid out the other (a
    checkpoint from before channels-last training): fused Adam must step as on one layout."""
    torch.manual_seed(0)
    grads = torch.randn(3, 8, 3, 4, 4)
    ref = nn.Parameter(torch.randn(8, 3, 4, 4))
    ref_opt = torch.optim.Adam([ref], lr=0.1, fused=True)
    ref.grad = grads[0].clone()
    ref_opt.step()
    saved = copy.deepcopy(ref_opt.state_dict())  # default layout, as train_state saves it
    w = nn.Parameter(ref.detach().clone().contiguous(memory_format=torch.channels_last))
    opt = torch.optim.Adam([w], lr=0.1, fused=True)
    opt.load_state_dict(saved)
    match_layouts(opt)
    assert opt.state[w]["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    for g in grads[1:]:
        ref.grad, w.grad = g.clone(), g.contiguous(memory_format=torch.channels_last)
        ref_opt.step()
        opt.step()
    assert torch.equal(w.detach(), ref.detach())


def test_frames_to_tensor_scales_a_copy_laid_out_channels_last():
    frames = torch.randint(0, 256, (2, 5, 8, 8, 3), dtype=torch.uint8)
    for given in (frames, frames.float()):  # scaled in place, but never the caller's tensor
        before = given.clone()
        x = frames_to_tensor(given)
        assert torch.equal(given, before)
        assert torch.equal(x, frames.movedim(-1, -3).float().div(255.0).sub(0.5))
        assert x[0].is_contiguous(memory_format=torch.channels_last)
