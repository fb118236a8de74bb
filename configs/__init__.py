"""The Hydra configs. Importing the package (Hydra does, to read them) registers the
resolvers they use: ``${train_split:wide-2}`` -> ``train-wide-2``."""

from omegaconf import OmegaConf

from embodied.shifts.splits import train_split

OmegaConf.register_new_resolver("train_split", train_split, replace=True)
