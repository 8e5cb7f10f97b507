"""PyTorch reference KonCept512: the MediaEval 2020 port, built from Cadene's ``pretrainedmodels`` file.

The MediaEval task's model (github ZhengyuZhao/koniq-PyTorch) is::

    base = nn.Sequential(*list(inceptionresnetv2(num_classes=1000).children())[:-1])   # keeps avgpool_1a
    fc = nn.Sequential(Linear(1536, 2048), ReLU, BatchNorm1d(2048), Dropout(.25),
                       Linear(2048, 1024), ReLU, BatchNorm1d(1024), Dropout(.25),
                       Linear(1024, 256), ReLU, BatchNorm1d(256), Dropout(.5), Linear(256, 1))
    forward: fc(base(x).view(B, -1))

``children()[:-1]`` drops only ``last_linear`` and keeps ``AvgPool2d(8, count_include_pad=False)``: on the
10x14 map of a 384x512 input it averages the top-left 8x8 window only. The state_dict keys are
``base.<child index>.*`` and ``fc.<index>.*``.

Cadene's module is loaded straight from its file (importing the ``pretrainedmodels`` package pulls in
torchvision, which this project does not need).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np


def _cadene_module():
    spec = importlib.util.find_spec("pretrainedmodels")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the `pretrainedmodels` package (Cadene) is needed for the PyTorch reference")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "inceptionresnetv2.py")
    name = "_cadene_inceptionresnetv2"
    if name in sys.modules:
        return sys.modules[name]
    file_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    # Registered so that tools which re-import a class's module by name (torch.compile's dynamo,
    # pickling) find it.
    sys.modules[name] = module
    return module


def build_torch_koncept():
    """The MediaEval KonCept512 as a ``torch.nn.Module`` with PyTorch's default random initialisation."""
    import torch.nn as nn

    cadene = _cadene_module()

    class KonCept512(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            base_model = cadene.InceptionResNetV2(num_classes=1000)
            self.base = nn.Sequential(*list(base_model.children())[:-1])
            self.fc = nn.Sequential(
                nn.Linear(1536, 2048), nn.ReLU(inplace=True), nn.BatchNorm1d(2048), nn.Dropout(p=0.25),
                nn.Linear(2048, 1024), nn.ReLU(inplace=True), nn.BatchNorm1d(1024), nn.Dropout(p=0.25),
                nn.Linear(1024, 256), nn.ReLU(inplace=True), nn.BatchNorm1d(256), nn.Dropout(p=0.5),
                nn.Linear(256, 1),
            )

        def forward(self, x):
            x = self.base(x)
            x = x.view(x.size(0), -1)
            return self.fc(x)

    return KonCept512()


def to_input(pixels: np.ndarray):
    """``[B, H, W, 3]`` pixels in [0, 255] -> NCHW float tensor in [-1, 1] (``Normalize(.5, .5)`` of ``ToTensor``)."""
    import torch

    x = torch.as_tensor(np.asarray(pixels, np.float32)).permute(0, 3, 1, 2).contiguous()
    return x / 127.5 - 1.0


def scores(model, pixels: np.ndarray) -> np.ndarray:
    """Eval-mode scores ``float32 [B]`` of ``[B, H, W, 3]`` pixels in [0, 255]."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(to_input(pixels))[:, 0].numpy()


def scores_and_grads(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[B]`` and d(sum of scores)/d(pixels) ``float32 [B, H, W, 3]`` in pixel units."""
    import torch

    model.eval()
    x = torch.as_tensor(np.asarray(pixels, np.float32)).requires_grad_(True)
    out = model((x.permute(0, 3, 1, 2) / 127.5 - 1.0))[:, 0]
    out.sum().backward()
    return out.detach().numpy(), x.grad.numpy()


def calibrate(model, photos: np.ndarray, seed: int = 0, spread: float = 12.0, centre: float = 50.0):
    """Randomise affine batch-norm parameters, then set every running statistic from real photos.

    1. Batch-norm gammas ~ U(0.6, 1.4) and betas ~ N(0.1, 0.1) (so a swapped gamma / beta / mean / var
       in a converter changes the scores).
    2. One forward pass in training mode with ``momentum=None`` (cumulative average) and dropout off:
       each batch norm normalises with the batch's own statistics and stores them, layer after layer,
       so in eval mode every layer sees the statistics of its own inputs on these photos.
    3. The last Linear is rescaled so the photos' scores have standard deviation ``spread`` around
       ``centre``.

    Args:
      model: from :func:`build_torch_koncept`.
      photos: ``uint8 [N, H, W, 3]`` real photos (N >= 2).
    """
    import torch
    import torch.nn as nn

    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(0.6 + 0.8 * torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.1 + 0.1 * torch.randn(bn.bias.shape, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        model(to_input(photos))
        for bn in bns:
            bn.momentum = 0.1
        s = torch.as_tensor(scores(model, photos))
        last = model.fc[-1]
        gain = spread / max(float(s.std()), 1e-6)
        last.weight.mul_(gain)
        last.bias.copy_((last.bias - s.mean()) * gain + centre)
    model.eval()
    return model
