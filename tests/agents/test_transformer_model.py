"""The transformer model: it learns, its cache changes nothing, it is causal, it reads the episode.

Tiny sizes throughout (a dozen CupCarry episodes, a 2-layer width-64 decoder, 150 steps).
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from model_checks import agent_config, fitted, longest, observed, planned_actions
from toy_world import stepped

from embodied.agents.gpt import GPT
from embodied.agents.mpc import make_policy
from embodied.agents.transformer_model import TransformerModel

TINY = dict(size="xs", head_hidden=(32,), batch_size=8, lr=3e-3, warmup=10, seed=0)


@pytest.fixture(scope="module")
def model(cup_carry_states) -> TransformerModel:
    return fitted(TransformerModel(**TINY), cup_carry_states, 150)


def _actions(n: int, h: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, h, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_loss_falls(model):
    loss, mse = model.losses["loss"], model.losses["mse"]
    assert len(loss) == 150
    assert np.mean(loss[-10:]) < 0.3 * np.mean(loss[:10])
    assert np.mean(mse[-10:]) < 0.3 * np.mean(mse[:10])


def test_sizes_span_the_range():
    """xs to l: about 0.1M to 20M decoder parameters."""
    counts = {}
    for size in ("xs", "s", "m", "l"):
        m = TransformerModel(size=size)
        m.build(44, 4)
        counts[size] = sum(p.numel() for p in m.gpt.parameters())
    assert 0.08e6 < counts["xs"] < 0.15e6
    assert counts["xs"] < counts["s"] < counts["m"] < counts["l"]
    assert 15e6 < counts["l"] < 25e6


def test_decoder_cache_equals_whole_sequence():
    """One token at a time, or in two chunks, through a cache: the whole sequence's outputs."""
    torch.manual_seed(0)
    gpt = GPT(10, 5, dim=32, layers=2, heads=4).eval()
    x = torch.randn(3, 12, 10)
    with torch.no_grad():
        whole = gpt(x)
        cache = gpt.new_cache(3, capacity=2)  # grows as it fills
        one_by_one = torch.cat([gpt(x[:, t : t + 1], cache) for t in range(12)], 1)
        chunks = gpt.new_cache(3, capacity=12)
        two = torch.cat([gpt(x[:, :5], chunks), gpt(x[:, 5:], chunks)], 1)
    torch.testing.assert_close(one_by_one, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two, whole, rtol=1e-5, atol=1e-5)
    assert cache.length == chunks.length == 12


def test_sliding_window_cache_equals_whole_sequence():
    """With ``window`` (the model's context_steps) the cached decoder still equals the whole
    sequence read afresh, and one layer reads nothing older than its window."""
    torch.manual_seed(0)
    x = torch.randn(2, 12, 10)
    gpt = GPT(10, 5, dim=32, layers=2, heads=4, window=3).eval()
    with torch.no_grad():
        whole = gpt(x)
        cache = gpt.new_cache(2, capacity=4)
        one_by_one = torch.cat([gpt(x[:, t : t + 1], cache) for t in range(12)], 1)
        chunks = gpt.new_cache(2, capacity=1)
        three = torch.cat([gpt(x[:, :4], chunks), gpt(x[:, 4:9], chunks), gpt(x[:, 9:], chunks)], 1)
        unlimited = GPT(10, 5, dim=32, layers=2, heads=4).eval()
        unlimited.load_state_dict(gpt.state_dict())  # the same weights, reading everything
        full = unlimited(x)
        one = GPT(10, 5, dim=32, layers=1, heads=4, window=3).eval()
        older = x.clone()
        older[:, 0] += 1.0
        a, b = one(x), one(older)
    torch.testing.assert_close(one_by_one, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(three, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full[:, :3], whole[:, :3], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(full[:, 3:], whole[:, 3:])
    assert not torch.allclose(a[:, :3], b[:, :3])
    torch.testing.assert_close(a[:, 3:], b[:, 3:], rtol=0, atol=0)


@pytest.mark.parametrize("window", [None, 4])
def test_branches_equal_the_whole_sequences(window):
    """Continuations branching from one shared prefix (its keys read in place, never copied)
    give what each gives read whole as prefix + own tokens: the prefix's and the own scores
    merged in one softmax; with a window the prefix drops out, then the oldest own tokens."""
    torch.manual_seed(0)
    gpt = GPT(10, 5, dim=32, layers=2, heads=4, window=window).eval()
    prefix, own = torch.randn(1, 7, 10), torch.randn(6, 5, 10)
    with torch.no_grad():
        whole = gpt(torch.cat([prefix.expand(6, -1, -1), own], 1))[:, 7:]
        cache = gpt.new_cache(1, capacity=7)
        gpt(prefix, cache)
        branches = gpt.new_branches(6, capacity=2)  # grows as it fills
        got = torch.stack([gpt.branch(own[:, t], cache, branches) for t in range(5)], 1)
        fresh = gpt.new_branches(6, capacity=5)
        alone = torch.stack([gpt.branch(own[:, t], None, fresh) for t in range(5)], 1)
    assert (got - whole).abs().max() < 1e-5
    assert (alone - gpt(own)).abs().max() < 1e-5
    assert cache.length == 7 and branches.length == 5


def test_context_steps_reach_the_decoder(cup_carry_states):
    for steps in (4, None):
        m = TransformerModel(**{**TINY, "context_steps": steps})
        m.fit(cup_carry_states, steps=1)
        assert all(block.window == steps for block in m.gpt.blocks)


def test_causal_a_later_token_changes_no_earlier_prediction(model, cup_carry_states):
    ep = longest(cup_carry_states)
    s = torch.as_tensor(ep.state[None, :-1])
    a = torch.as_tensor(ep.action[None])
    t = ep.length // 2
    s2, a2 = s.clone(), a.clone()
    s2[:, t:] += 0.5
    a2[:, t:] = -a2[:, t:]
    before, after = model.predict(s, a), model.predict(s2, a2)
    torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, t:], before[:, t:])


def test_cached_rollout_equals_the_uncached_sequence(model, cup_carry_states):
    """Observe a history, then roll candidates out: the KV-cached step/rollout give what the
    decoder gives reading the whole (history + imagined) sequence afresh at every step."""
    ep = longest(cup_carry_states)
    t = 6
    observed(model, ep.state[: t + 1], ep.action[:t])
    z0 = torch.as_tensor(ep.state[t])
    actions = _actions(5, 4)
    n, h = actions.shape[:2]
    # no cache: every imagined step re-reads the whole sequence so far
    states = torch.as_tensor(ep.state[None, :t]).expand(n, -1, -1)
    acts = torch.as_tensor(ep.action[None, :t]).expand(n, -1, -1)
    z = z0.expand(n, -1)
    fresh = []
    for k in range(h):
        states = torch.cat([states, z[:, None]], 1)
        acts = torch.cat([acts, actions[:, k : k + 1]], 1)
        z = model.predict(states, acts)[:, -1]
        fresh.append(z)
    cached, zz = [], z0.expand(n, -1)
    for k in range(h):
        zz = model.step(zz, actions[:, k])[0]
        cached.append(zz)
    torch.testing.assert_close(torch.stack(cached, 1), torch.stack(fresh, 1), rtol=1e-4, atol=1e-4)
    # the whole-horizon path is the stepped one, batched; a second rollout of the same real
    # step (the planner's next iteration) rewinds the candidates' fork to the prefix
    first = model.rollout(z0, actions)
    for got, want in zip(first, stepped(model, z0, actions), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    model.rollout(z0, _actions(5, 4, seed=2))
    for got, want in zip(model.rollout(z0, actions), first, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_predictions_depend_on_theobserved(model, cup_carry_states):
    """In context: the same state and action, after different episodes, predict differently;
    planning never re-reads the history (one token per observed step in the cache)."""
    ep = longest(cup_carry_states)
    other = next(e for e in cup_carry_states.episodes if e.length > 8 and e is not ep)
    z, a = torch.as_tensor(ep.state[6:7]), torch.as_tensor(ep.action[6:7])
    model.encode(ep.state[6])  # no history
    alone = model.step(z, a)
    belief = observed(model, ep.state[:7], ep.action[:6])
    assert belief.cache.length == 6
    own = model.step(z, a)
    observed(model, other.state[:7], other.action[:6])
    foreign = model.step(z, a)
    for x, y in ((alone, own), (own, foreign)):
        assert not torch.allclose(x[0], y[0])
    observed(model, ep.state[:7], ep.action[:6])
    torch.testing.assert_close(model.step(z, a)[0], own[0], rtol=0, atol=0)


def test_save_load_round_trip_is_bit_identical(model, cup_carry_states, tmp_path):
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = TransformerModel.load(path)
    assert loaded.config == model.config
    for (name, x), (_, y) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
    ep = longest(cup_carry_states)
    z0, actions = torch.as_tensor(ep.state[5]), _actions(7, 5)
    outs = []
    for m in (model, loaded):
        observed(m, ep.state[:6], ep.action[:5])
        outs.append(m.rollout(z0, actions))
    for got, want in zip(*outs, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_resumed_training_equals_uninterrupted(cup_carry_states, tmp_path):
    straight = TransformerModel(**TINY)
    straight.fit(cup_carry_states, steps=20)
    first = TransformerModel(**TINY)
    first.fit(cup_carry_states, steps=12)
    first.save(tmp_path / "m.pt")
    resumed = TransformerModel.load(tmp_path / "m.pt")
    resumed.load_train_state(first.train_state())
    resumed.fit(cup_carry_states, steps=8)
    for (name, x), (_, y) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name


def test_policy_plans_from_the_episode(model, tmp_path):
    """The agent's own config plans with the trained model: actions in bounds, and the belief
    holds one cached token per real step taken."""
    model.save(tmp_path / "model.pt")
    cfg = agent_config("transformer", TransformerModel, TINY)
    env = gymnasium.make("embodied/CupCarry-v0")
    policy = make_policy(cfg, tmp_path, env, seed=0)
    actions = planned_actions(policy, env, 5)
    env.close()
    assert actions.shape == (5, 4) and np.all(np.abs(actions) <= 1.0)
    assert policy.belief.cache.length == 4


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown size 'xxl'; valid: \['xs', 's', 'm', 'l'\]"):
        TransformerModel(size="xxl")
    with pytest.raises(ValueError, match="context_steps must be >= 1 or None; got 0"):
        TransformerModel(context_steps=0)
