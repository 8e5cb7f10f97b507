#!/usr/bin/env bash
# Creates .venv and installs qcamo_jax with everything the tests need, from the project's own files.
# torch is pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build). Cadene's
# `pretrainedmodels` (the PyTorch InceptionResNetV2 the MediaEval port used) is installed without its
# dependencies because it declares torchvision, which does not import beside torch 2.13; the tests load
# its inceptionresnetv2.py directly, which needs only torch.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]' -r tests/requirements.txt
python -m pip install -q --no-deps pretrainedmodels==0.7.4
