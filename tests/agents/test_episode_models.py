"""What the models that read the episode (adaptive, transformer) must both do: train the same
weights for a seed, and refuse to observe unfitted or to load another family's checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_adaptive_model import TINY as ADAPTIVE
from test_transformer_model import TINY as TRANSFORMER

from embodied.agents.adaptive_model import AdaptiveModel
from embodied.agents.transformer_model import TransformerModel

FAMILIES = {  # the class, its tiny settings, training steps, checkpoint format
    "adaptive": (AdaptiveModel, ADAPTIVE, 10, "embodied-adaptive-model/1"),
    "transformer": (TransformerModel, TRANSFORMER, 5, "embodied-transformer-model/1"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_for_a_seed(family, cup_carry_states):
    cls, tiny, steps, _ = FAMILIES[family]

    def weights(seed: int) -> list[torch.Tensor]:
        m = cls(**{**tiny, "seed": seed})
        m.fit(cup_carry_states, steps=steps)
        return list(m.state_dict().values())

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first, other, strict=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_refuses_to_observe_unfitted_or_load_another_format(family, tmp_path):
    cls, tiny, _, checkpoint_format = FAMILIES[family]
    with pytest.raises(RuntimeError, match=f"{cls.__name__} has not been fitted"):
        cls(**tiny).observe(None, None, np.zeros(3, np.float32))
    bogus = tmp_path / "state.pt"
    torch.save({"format": "embodied-state-model/1"}, bogus)
    with pytest.raises(ValueError, match=f"expected '{checkpoint_format}'"):
        cls.load(bogus)
