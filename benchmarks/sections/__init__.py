"""The sections of the speed suite (``benchmarks/run.py``), one module each, and what they share.

* :mod:`.measure` - timing, compile timing, FLOP and memory counts, device facts, the deadline budget;
* :mod:`.torch_side` - the PyTorch reference's setup, gradient step and arithmetic switch;
* :mod:`.grad` - (a) forward + input gradient by batch size;
* :mod:`.attack` - (b) the paper's attack (PGD + bisection, then the DCT quantizer);
* :mod:`.options` - the speed options of :mod:`qcamo_jax.precision`: speed, success, distortion;
* :mod:`.torch_compile` - the ``torch.compile`` reference of (a);
* :mod:`.table` - the human-readable table of a report.

Data contract: each ``bench_*`` returns a JSON-able ``dict`` (times in seconds, memory in bytes or MiB
as its key says) that ``run.py`` stores under the section's key; a section that cannot run returns or
is given ``{"unavailable": reason}``. Modules here expect ``benchmarks/`` and the repository root on
``sys.path`` (``run.py`` puts them there).
"""
