"""The PyTorch side of the speed suite: setup, the gradient step of (a), and its arithmetic switch.

Data contract: images are ``float32 [B, H, W, 3]`` pixels (0-255) on the host; PyTorch takes them as
NCHW in the model's ``[-1, 1]`` range. Every step synchronises the device before returning, so a wall
time around it is the device's time.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np

def torch_setup(threads: int | None, use_cuda: bool):
    """Import torch, pick its device, and make float32 mean float32 (no TF32) like JAX's reference."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if use_cuda and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False  # PyTorch's default is TF32 for convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
    return torch, device


@contextlib.contextmanager
def _host_numpy(torch):
    """Let ``Tensor.numpy()`` accept device tensors (copy to the host first) while active."""
    original = torch.Tensor.numpy
    torch.Tensor.numpy = lambda self, *a, **k: original(self.detach().cpu(), *a, **k)
    try:
        yield
    finally:
        torch.Tensor.numpy = original


def _sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def torch_grad_step(model, torch_device: str) -> Callable[[np.ndarray], Any]:
    """``step(x float32 [B, H, W, 3] pixels) -> d(sum of scores)/dx``, synchronised: PyTorch's (a)."""
    import torch

    def step(x):
        xt = torch.as_tensor(x, device=torch_device).requires_grad_(True)
        (g,) = torch.autograd.grad(model(xt.permute(0, 3, 1, 2) / 127.5 - 1.0).sum(), xt)
        _sync(torch, torch_device)
        return g

    return step


@contextlib.contextmanager
def torch_precision(torch, matmul: str):
    """PyTorch's convolution/matmul arithmetic to match a :class:`qcamo_jax.precision.SpeedOptions` ``matmul``."""
    tf32 = matmul in ("tf32", "default")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
