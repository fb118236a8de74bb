"""Model-free baselines: Stable-Baselines3 SAC and PPO trained on the ``train`` split.

The yardstick beside the world models: an SB3 policy trained by trial and error in the real
(training-distribution) simulator, loaded as the same Policy object the evaluation grid runs
for MPC agents.

- ``policy``: the trained model as a Policy (``make_policy``, the agents' ``policy`` factory);
- ``trainer``: ``train_sb3`` (the agents' ``trainer``), its settings and resumable loop;
- ``callbacks``: checkpoints, scheduled evaluation, clean stop, progress bar;
- ``demos``, ``cloning``, ``shaping``: learning a hard task (CupCarry) from demonstrations.
"""

from embodied.agents.sb3.policy import MODEL_FILE, SB3Policy, make_policy
from embodied.agents.sb3.trainer import PROGRESS, SB3Settings, train_sb3

__all__ = ["MODEL_FILE", "PROGRESS", "SB3Policy", "SB3Settings", "make_policy", "train_sb3"]
