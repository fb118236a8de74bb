"""State probes on toy latents whose relation to the state is known (numpy/torch, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied.envs.arm import STATE_LABELS
from embodied.metrics.probes import (
    errors,
    exact_readout,
    fit_probe,
    open_loop_latents,
    probe_errors,
    state_targets,
)

D = len(STATE_LABELS)
IX = {n: i for i, n in enumerate(STATE_LABELS)}


def _states(rng: np.random.Generator, n: int, horizon: int) -> np.ndarray:
    """(n, horizon+1, D) random-walk states; a pad touches the cup on about half the steps."""
    s = np.cumsum(rng.normal(0, 0.02, (n, horizon + 1, D)), axis=1)
    s[..., IX["touch_left"]] = rng.normal(0, 1, (n, horizon + 1)).clip(min=0)
    s[..., IX["touch_right"]] = 0.0
    return s


class MixModel:
    """A latent that is a fixed linear mix of the true state, stepped along known states."""

    def __init__(self, states: np.ndarray, mix: np.ndarray) -> None:
        self.states, self.mix, self.t = states, mix, 0

    def encode(self, obs: np.ndarray) -> torch.Tensor:
        self.t = 0
        return torch.as_tensor(np.asarray(obs) @ self.mix)

    def step(self, z: torch.Tensor, action: torch.Tensor):
        self.t += 1
        return torch.as_tensor(self.states[:, self.t] @ self.mix), None, None


def test_targets_are_read_from_the_labelled_columns():
    s = np.zeros((1, D))
    s[0, [IX["cup_x"], IX["cup_y"], IX["cup_z"]]] = (0.5, 0.1, 0.2)
    s[0, [IX["ee_x"], IX["ee_y"], IX["ee_z"]]] = (0.4, 0.1, 0.25)
    s[0, IX["cup_vz"]] = -0.3
    s[0, IX["touch_right"]] = 2.0
    t = state_targets(s, STATE_LABELS)
    assert t.rel[0] == pytest.approx([0.1, 0.0, -0.05])
    assert t.vel[0] == pytest.approx([0.0, 0.0, -0.3])
    assert t.held.tolist() == [True]
    with pytest.raises(ValueError, match="state labels lack"):
        state_targets(s[:, :5], STATE_LABELS[:5])


def test_open_loop_latents_follow_encode_then_step():
    rng = np.random.default_rng(0)
    states = _states(rng, 4, 6)
    mix = rng.normal(size=(D, 16))
    z = open_loop_latents(MixModel(states, mix), states[:, 0], np.zeros((4, 6, 4)))
    assert z.shape == (4, 7, 16)
    assert np.allclose(z, states @ mix)
    with pytest.raises(ValueError, match="4 first observations for 3"):
        open_loop_latents(MixModel(states, mix), states[:, 0], np.zeros((3, 6, 4)))


def test_probes_read_a_mixed_state_and_not_a_latent_without_it():
    rng = np.random.default_rng(1)
    horizon = 5
    train, test = _states(rng, 300, horizon), _states(rng, 100, horizon)
    mix = rng.normal(size=(D, 48))  # more latent dims than state: an invertible mix
    exact = probe_errors("exact", train, train, test, test, STATE_LABELS)
    assert np.all(exact.rel == 0) and np.all(exact.vel == 0) and np.all(exact.held == 0)
    lin = probe_errors("linear", train @ mix, train, test @ mix, test, STATE_LABELS)
    assert lin.rel.shape == (horizon + 1,) and lin.rel.max() < 1e-3 and lin.vel.max() < 1e-3
    # a latent carrying no state: the probe can do no better than the targets' spread
    noise_train = rng.normal(size=(300, horizon + 1, 48))
    noise_test = rng.normal(size=(100, horizon + 1, 48))
    blind = probe_errors("linear", noise_train, train, noise_test, test, STATE_LABELS)
    spread = np.linalg.norm(
        state_targets(test, STATE_LABELS).rel - state_targets(train, STATE_LABELS).rel.mean(0),
        axis=1,
    ).mean()
    assert blind.rel.mean() > 0.8 * spread > 100 * lin.rel.max()
    # held is a threshold of a touch force: the MLP reads it better than chance
    mlp = probe_errors("mlp", np.tanh(train @ mix), train, np.tanh(test @ mix), test, STATE_LABELS)
    assert mlp.held.mean() < 0.25 and mlp.rel.mean() < 0.5 * spread


def test_errors_are_per_horizon_and_bad_kinds_are_named():
    rng = np.random.default_rng(2)
    states = _states(rng, 10, 3)
    truth = state_targets(states, STATE_LABELS)
    read = exact_readout(states, STATE_LABELS)
    read[:, 0] += 0.1  # rel x off by 10 cm everywhere
    e = errors(read, truth, horizon=3)
    assert e.rel == pytest.approx([0.1] * 4) and np.all(e.vel == 0)
    with pytest.raises(ValueError, match="choose from \\('linear', 'mlp'\\)"):
        fit_probe("svm", states.reshape(-1, D), truth)


def test_a_fit_is_reused_for_the_same_inputs_and_leaves_torchs_generator_alone():
    rng = np.random.default_rng(3)
    states = _states(rng, 20, 3).reshape(-1, D)
    truth = state_targets(states, STATE_LABELS)
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    probe = fit_probe("mlp", states, truth)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert fit_probe("mlp", states.copy(), truth) is probe  # same content: no second fit
    linear = fit_probe("linear", states, truth)
    assert fit_probe("linear", states, truth) is linear is not probe
    assert fit_probe("linear", states + 1e-9, truth) is not linear  # other content: fitted anew
