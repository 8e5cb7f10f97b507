"""Attacks on a quality regressor as pure, compiled functions: FGSM, I-FGSM, PGD (L2/Linf), budget search.

Data contract (every module): images ``float32 [B, H, W, 3]`` in pixel units (0-255), targets ``[B]``
on the score scale, budgets in pixel units; a score function is ``score_fn(variables, image [H, W, 3])
-> scalar`` (:meth:`qcamo_jax.models.hub.QualityModel.score_one`). Success means
``score - target + margin < 0``. All attacks are written for one image and ``vmap``-ed; none is jitted
inside: use :func:`make_attack` (one ``jax.jit``, one trace per input shape) or jit them yourself.

Example:
  >>> from qcamo_jax import attacks
  >>> from qcamo_jax.models.hub import load_model
  >>> model = load_model("tiny-random")
  >>> run = attacks.make_attack(model.score_one, "search", attacks.SearchConfig())
  >>> adv, res = run(model.variables, images, targets, jax.random.key(0))
  >>> res.success, res.l2, res.budget
"""

from qcamo_jax.attacks import losses, projections, steps
from qcamo_jax.attacks.api import METHODS, attack_fn, make_attack
from qcamo_jax.attacks.config import AttackResult, FGSMConfig, PGDConfig, SearchConfig
from qcamo_jax.attacks.fgsm import fgsm, ifgsm, ifgsm_config
from qcamo_jax.attacks.losses import make_loss, quality_loss, with_transform
from qcamo_jax.attacks.pgd import pgd, pgd_single
from qcamo_jax.attacks.search import budget_search, search_single

__all__ = [
    "AttackResult", "FGSMConfig", "METHODS", "PGDConfig", "SearchConfig", "attack_fn", "budget_search", "fgsm",
    "ifgsm", "ifgsm_config", "losses", "make_attack", "make_loss", "pgd", "pgd_single", "projections",
    "quality_loss", "search_single", "steps", "with_transform",
]
