"""nets.Chain: a drop-in for nn.Sequential (same outputs, same checkpoint keys)."""

import torch
from torch import nn

from embodied.agents.nets import MLP, Chain


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
