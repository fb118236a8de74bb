"""Torch building blocks shared by the learned world models (state, pixel, latent, retrieval).

- ``Chain`` (a lean ``nn.Sequential``) and ``MLP``, a plain multilayer perceptron built on it.
- ``Normalizer``: per-feature mean/std fitted once from data, kept as buffers (saved with it).
- ``EnsembleLinear`` / ``EnsembleMLP``: E independent MLPs evaluated in one batched matmul, the
  core of a PETS-style probabilistic ensemble.
- ``GaussianHead``: splits an output into mean and log-variance bounded by learned limits.
- ``ConvEncoder`` / ``ConvDecoder``: frames (..., S, S, 3) uint8 <-> vectors, for S a power of two
  >= 8 (64 by default), with ``frames_to_tensor`` / ``tensor_to_frames`` for the pixel scaling.
- ``save_checkpoint`` / ``load_checkpoint``: atomic torch files tagged with a format string, so
  loading a foreign or truncated file fails saying so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied.atomic import write_atomic

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Chain(nn.Sequential):
    """``nn.Sequential`` calling each layer's ``forward`` directly: ``Module.__call__``'s hook
    machinery cost about as much as a small layer's arithmetic at the planner's batch sizes
    (~25% of a pixel-model step). Same parameters and state-dict keys; no hooks on the layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer.forward(x)
        return x


class MLP(Chain):
    """Linear layers with an activation between them (none after the last)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (256, 256),
        act: str = "silu",
        layer_norm: bool = False,
    ):
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers.append(nn.Linear(a, b))
            if layer_norm:
                layers.append(nn.LayerNorm(b))
            layers.append(activation(act))
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class Normalizer(nn.Module):
    """Standardises features with statistics fitted once from the training data.

    Near-constant features get std 1 (not ~0), so they neither explode nor dominate the loss.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: np.ndarray | torch.Tensor) -> Normalizer:
        x = torch.as_tensor(np.asarray(x, np.float32)).reshape(-1, self.mean.numel())
        std = x.std(0)
        self.mean.copy_(x.mean(0))
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


class EnsembleLinear(nn.Module):
    """E independent linear layers: (E, B, in) -> (E, B, out) in one ``baddbmm``."""

    def __init__(self, members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """E MLPs with identical shape and independent weights; input and output are (E, B, dim)."""

    def __init__(
        self, members: int, in_dim: int, out_dim: int, hidden: Sequence[int], act: str = "silu"
    ):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(
            EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):  # forward directly, as ``Chain`` does
            x = layer.forward(x)
            if i < len(self.layers) - 1:
                x = self.act.forward(x)
        return x


class GaussianHead(nn.Module):
    """Mean and log-variance with learned soft bounds (PETS): keeps the variance finite.

    ``bound_loss`` is the small regulariser that pulls the bounds tight around what the data needs.
    """

    def __init__(self, dim: int, max_logvar: float = 0.5, min_logvar: float = -10.0):
        super().__init__()
        self.max_logvar = nn.Parameter(torch.full((dim,), max_logvar))
        self.min_logvar = nn.Parameter(torch.full((dim,), min_logvar))

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = raw.chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def bound_loss(self) -> torch.Tensor:
        return self.max_logvar.sum() - self.min_logvar.sum()


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element Gaussian negative log-likelihood without the constant."""
    return 0.5 * ((target - mean) ** 2 * torch.exp(-logvar) + logvar)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``/``cuda[:i]`` as given (checked)."""
    name = str(device)
    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid: {list(DEVICES)} (or cuda:<index>)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device; use auto")
    return torch.device(name)


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"):
    """uint8 (..., S, S, 3) -> float (..., 3, S, S) in [-0.5, 0.5], laid out channels-last (a
    view of the frames' own layout). Scaled in place: a training batch is megabytes, and two
    more fresh buffers of that size cost a latent-model step more than its predictor."""
    x = torch.as_tensor(np.asarray(frames), device=device)
    return x.movedim(-1, -3).to(torch.float32, copy=True).div_(255.0).sub_(0.5)


def state_tensor(obs: Any, device: str | torch.device = "cpu") -> torch.Tensor:
    """State observation(s) (D,) or (B, D), or a ``state+pixels`` dict -> a (B, D) tensor."""
    if isinstance(obs, dict):
        obs = obs["state"]
    z = torch.as_tensor(np.asarray(obs, np.float32), device=device)
    return z.reshape(-1, z.shape[-1])


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, S, S) in [-0.5, 0.5] -> uint8 (..., S, S, 3)."""
    x = ((x.detach().float() + 0.5).clamp(0, 1) * 255.0).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


class ChannelsLastTraining(nn.Module):
    """Conv kernels laid out channels-last while training, the default layout otherwise.

    oneDNN's backward (and the transposed convs' forward) run ~8% of a frame model's training
    step faster on channels-last weights, but the layout changes a convolution's rounding
    (~1e-8), and the planner amplifies any difference in the encoded observation into other
    actions: evaluation keeps the default layout, so a given model plans exactly as before.
    """

    def train(self, mode: bool = True) -> ChannelsLastTraining:
        super().train(mode)
        layout = torch.channels_last if mode else torch.contiguous_format
        for p in self.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=layout)
        return self


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Lay each parameter's optimizer state out as the parameter is (``ChannelsLastTraining``
    switches layouts; state saved before it existed is in the default one): fused Adam steps
    through raw memory and silently mixes up entries of tensors laid out differently."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            layout = torch.contiguous_format if p.is_contiguous() else torch.channels_last
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    state[key] = value.contiguous(memory_format=layout)


def _conv_layers(image_size: int) -> int:
    layers = int(round(math.log2(image_size / 4)))
    if image_size < 8 or 4 * 2**layers != image_size:
        raise ValueError(f"image_size must be a power of two >= 8; got {image_size}")
    return layers


class ConvEncoder(ChannelsLastTraining):
    """Frames (..., C, S, S) -> (..., embed_dim): stride-2 convs down to 4x4, then a linear.

    ``channels`` > 3 takes a stack of frames (a short history) as one input.
    """

    def __init__(
        self,
        image_size: int = 64,
        embed_dim: int = 256,
        depth: int = 32,
        act: str = "silu",
        channels: int = 3,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(_conv_layers(image_size)):
            out = depth * 2 ** min(i, 3)
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), activation(act)]
            channels = out
        self.convs = Chain(*layers)
        self.out = nn.Linear(channels * 16, embed_dim)
        self.image_size, self.embed_dim = image_size, embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        h = self.convs(x.reshape(-1, *x.shape[-3:]))
        return self.out(h.flatten(1)).reshape(*lead, self.embed_dim)


class ConvDecoder(ChannelsLastTraining):
    """(..., in_dim) -> frames (..., 3, S, S) (pre-scaling, same range as ``frames_to_tensor``)."""

    def __init__(self, in_dim: int, image_size: int = 64, depth: int = 32, act: str = "silu"):
        super().__init__()
        n = _conv_layers(image_size)
        widths = [depth * 2 ** min(i, 3) for i in range(n)][::-1]
        self.first = widths[0]
        self.inp = nn.Linear(in_dim, self.first * 16)
        layers: list[nn.Module] = [activation(act)]
        for i, w in enumerate(widths):
            out = widths[i + 1] if i + 1 < n else 3
            layers.append(nn.ConvTranspose2d(w, out, 4, stride=2, padding=1))
            if i + 1 < n:
                layers.append(activation(act))
        self.deconvs = Chain(*layers)
        self.image_size = image_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.inp(z.reshape(-1, z.shape[-1])).reshape(-1, self.first, 4, 4)
        x = self.deconvs(h)
        return x.reshape(*lead, 3, self.image_size, self.image_size)


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike, fmt: str) -> None:
    """``torch.save`` through :func:`embodied.atomic.write_atomic`; ``fmt`` tags the file."""
    write_atomic(path, lambda tmp: torch.save({"format": fmt, **obj}, tmp))


def load_checkpoint(
    path: str | os.PathLike, fmt: str, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a file written by ``save_checkpoint`` with format ``fmt``, or fail saying why not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(
            f"cannot read checkpoint {path} (truncated or not a torch file): {err}"
        ) from err
    found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
    if found != fmt:
        raise ValueError(f"checkpoint {path} has format {found!r}; expected {fmt!r}")
    return obj
