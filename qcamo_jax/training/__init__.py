"""Training of the embedded default quality model (``qcamo-small``, ``weights/default.safetensors``).

Modules: ``sources`` (licensed pictures and the fixed held-out split), ``distortions`` (graded
synthetic distortions), ``labels`` (SSIM-calibrated MOS-like labels), ``data`` (dataset preparation),
``train_default`` (the one training command), ``evaluate_default`` (held-out criteria), ``speed``
(forward + input gradient against KonCept512).
"""
