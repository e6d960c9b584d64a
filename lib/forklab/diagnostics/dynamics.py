"""Entropy dynamics: how one update of the logits changes a softmax policy's entropy.

Introduced in ``notebooks/04_entropy_mechanism.ipynb``.

Notation: logits z ``[..., V]``, p = softmax(z), H = −Σ_a p_a log p_a. Everything here follows from

.. math:: \\frac{\\partial H}{\\partial z_a} = -p_a(\\log p_a + H)
          \\quad\\Rightarrow\\quad
          \\Delta H \\approx -\\sum_a p_a(\\log p_a + H)\\,\\Delta z_a
          = -\\mathrm{Cov}_{a\\sim p}(\\log p_a, \\Delta z_a)

(Σ_a p_a(log p_a + H) = 0, which is why the sum is a covariance: adding a constant to every logit
changes nothing). The lemma and its policy-gradient corollaries are The Entropy Mechanism of RL for
Reasoning LMs (Cui et al., arXiv 2505.22617; docs/formulas.md, HIGH, checked numerically).

=================================  =========================================================
function                           what it gives
=================================  =========================================================
``exact_entropy_change``           H(softmax(z + Δz)) − H(softmax(z)), the ground truth
``first_order_entropy_change``     −Cov_p(log p, Δz), the lemma
``pg_logit_step``/``npg_…``        Δz of a policy-gradient / natural-PG step on tabular logits
``pg_entropy_change``/``npg_…``    their first-order predictions
``entropy_discriminator``          S* = p_k(H + log p_k) (arXiv 2602.03392, MED)
``sampled_token_entropy_change``   first-order ΔH of a sampled-token step Δz = c(e_k − p)
``steer_omega``                    STEER's per-token estimate Ω (arXiv 2510.10150)
``compare_entropy_estimates``      all of the above side by side for one step
``token_covariance``               Clip-Cov/KL-Cov's Cov_t (re-exported from regularizers)
``fit_entropy_law``                least-squares fit of R = −a·e^H + b
=================================  =========================================================

Computed and returned in float64: an entropy change is a small difference of two O(1) numbers, and
fp32 would lose the digits that the first-order-vs-exact comparisons are about.

Inputs (forklab's one rule, docs/reliability.md): logits may hold −inf (a filtered token) but not
NaN, +inf or an all −inf row; every other input is finite (NaN/±inf raise ``ValueError``), except
off ``mask`` in :func:`steer_omega`, where any value is ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab.diagnostics._entropy_law import EntropyLawFit, fit_entropy_law  # noqa: F401 - public here
from forklab.ops import entropy_from_logits
from forklab.regularizers import token_covariance

__all__ = [
    "entropy_logit_gradient",
    "exact_entropy_change",
    "first_order_entropy_change",
    "pg_logit_step",
    "npg_logit_step",
    "pg_entropy_change",
    "npg_entropy_change",
    "entropy_discriminator",
    "sampled_token_entropy_change",
    "steer_omega",
    "compare_entropy_estimates",
    "token_covariance",
    "EntropyLawFit",
    "fit_entropy_law",
]


def _logits(name: str, x) -> Tensor:
    return _checks.logits(name, x).double()


def _like_logits(name: str, x, logits: Tensor) -> Tensor:
    x = _checks.floating(name, x).double()
    _checks.same_shape("logits", logits, name, x)
    return x


def _policy(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """p, log p (0 where p = 0, so that 0·log 0 = 0 for −inf logits) and H, all float64."""
    logp = torch.log_softmax(z, -1)
    p = logp.exp()
    logp = torch.where(p > 0, logp, torch.zeros((), dtype=z.dtype))
    return p, logp, -(p * logp).sum(-1)


def _tokens(tokens, lead_shape: torch.Size, vocab: int) -> Tensor:
    if isinstance(tokens, int):
        tokens = torch.full(lead_shape, tokens, dtype=torch.long)
    tokens = _checks.as_tensor("tokens", tokens)
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"`tokens` must be integer ids, got dtype {tokens.dtype}")
    if tokens.shape != lead_shape:
        raise ValueError(f"`tokens` must have shape {list(lead_shape)} (logits without V), got {list(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
        raise ValueError(f"`tokens` must lie in [0, {vocab})")
    return tokens.long()


def entropy_logit_gradient(logits: Tensor) -> Tensor:
    """∂H/∂z_a = −p_a (log p_a + H): how the entropy moves when one logit moves.

    ============  ======================
    argument      shape
    ============  ======================
    logits        ``[..., V]`` float
    returns       ``[..., V]`` float64
    ============  ======================

    Sums to 0 over the vocabulary. Its negative is the entropy discriminator S* of every token
    (:func:`entropy_discriminator`). The Entropy Mechanism (arXiv 2505.22617), docs/formulas.md;
    notebook 04_entropy_mechanism.
    """
    p, logp, h = _policy(_logits("logits", logits))
    return -p * (logp + h[..., None])


def exact_entropy_change(logits: Tensor, delta_logits: Tensor) -> Tensor:
    """The true entropy change of a logit update: ΔH = H(softmax(z + Δz)) − H(softmax(z)).

    ============  ======================
    argument      shape
    ============  ======================
    logits        ``[..., V]`` float
    delta_logits  ``[..., V]`` float
    returns       ``[...]`` float64
    ============  ======================

    The ground truth every first-order prediction in this module is compared with (entropies via
    :func:`forklab.ops.entropy_from_logits` in float64). verl/TRL log the entropy itself
    (``actor/entropy``, ``entropy``), not its change. Notebook 04_entropy_mechanism.
    """
    z = _logits("logits", logits)
    dz = _like_logits("delta_logits", delta_logits, z)
    return entropy_from_logits(z + dz) - entropy_from_logits(z)


def first_order_entropy_change(logits: Tensor, delta_logits: Tensor) -> Tensor:
    """The lemma of The Entropy Mechanism: ΔH ≈ −Cov_{a∼π}(log π(a), Δz_a).

    .. math:: \\Delta H \\approx \\sum_a \\frac{\\partial H}{\\partial z_a}\\Delta z_a
              = -\\sum_a \\pi_a(\\log\\pi_a + H)\\,\\Delta z_a = -\\mathrm{Cov}_{a\\sim\\pi}(\\log\\pi_a, \\Delta z_a)

    ============  ======================
    argument      shape
    ============  ======================
    logits        ``[..., V]`` float
    delta_logits  ``[..., V]`` float
    returns       ``[...]`` float64
    ============  ======================

    Exact to O(‖Δz‖²): halving the step divides the error by ≈ 4. Linear in Δz, invariant to adding
    a constant to Δz. Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning
    Language Models", arXiv 2505.22617 (docs/formulas.md, HIGH). verl/TRL: no counterpart (their
    Clip-Cov/KL-Cov use the per-token batch version, :func:`token_covariance`).
    Notebook 04_entropy_mechanism.
    """
    z = _logits("logits", logits)
    dz = _like_logits("delta_logits", delta_logits, z)
    return (entropy_logit_gradient(z) * dz).sum(-1)


def _adv(adv, z: Tensor) -> Tensor:
    return _like_logits("adv", adv, z)


def pg_logit_step(logits: Tensor, adv: Tensor, lr: float, center: bool = True) -> Tensor:
    """Δz of one vanilla policy-gradient step on tabular softmax logits with per-action advantages.

    .. math:: \\Delta z = \\eta\\,\\pi \\odot (A - \\mathbb{E}_\\pi A) = \\eta\\,\\nabla_z \\mathbb{E}_{a\\sim\\pi}[A_a]
              \\qquad (\\texttt{center=False}: \\Delta z = \\eta\\,\\pi \\odot A)

    ============  ==============================================
    argument      shape
    ============  ==============================================
    logits        ``[..., V]`` float
    adv           ``[..., V]`` float, advantage of every action
    returns       ``[..., V]`` float64
    ============  ==============================================

    The paper writes Δz = η·π·A, which assumes E_π[A] = 0 (true advantages, and GRPO's expected
    advantages, satisfy it); ``center=True`` (default) is the exact gradient step for any A and is
    what ``forklab.envs.bandit.train(update="pg", mode="exact")`` takes (``policy_gradient``).
    arXiv 2505.22617 §4.2 (HIGH). Notebook 04_entropy_mechanism.
    """
    z = _logits("logits", logits)
    a = _adv(adv, z)
    lr = _checks.non_negative("lr", lr)
    p = torch.softmax(z, -1)
    if center:
        a = a - (p * a).sum(-1, keepdim=True)
    return lr * p * a


def npg_logit_step(logits: Tensor, adv: Tensor, lr: float) -> Tensor:
    """Δz of one natural policy-gradient step on tabular softmax logits: Δz = η·A.

    Shapes ``logits [..., V]``, ``adv [..., V]`` → ``[..., V]`` float64. The Fisher metric of a
    softmax turns the PG direction π⊙(A − E_π A) into A (up to a constant, which does not change
    π); ``forklab.envs.bandit.train(update="npg")`` takes this step. arXiv 2505.22617 §4.2 (HIGH).
    Notebook 04_entropy_mechanism.
    """
    z = _logits("logits", logits)
    return _checks.non_negative("lr", lr) * _adv(adv, z)


def pg_entropy_change(logits: Tensor, adv: Tensor, lr: float, center: bool = True) -> Tensor:
    """Predicted entropy change of a vanilla PG step: ΔH ≈ −η·Cov_{a∼π}(log π(a), π(a)·A(a)).

    .. math:: \\Delta H \\approx
              -\\eta\\,\\mathrm{Cov}_{a\\sim\\pi}\\big(\\log\\pi_a,\\; \\pi_a (A_a - \\mathbb{E}_\\pi A)\\big)

    ============  ==============================================
    argument      shape
    ============  ==============================================
    logits        ``[..., V]`` float
    adv           ``[..., V]`` float, advantage of every action
    returns       ``[...]`` float64
    ============  ==============================================

    A likely action with a high advantage lowers the entropy, a rare one with a high advantage
    raises it. ``center`` as in :func:`pg_logit_step` (with E_π A = 0 both agree with the
    paper's formula). Cui et al., arXiv 2505.22617, Theorem (vanilla PG), docs/formulas.md (HIGH).
    Notebook 04_entropy_mechanism.
    """
    return first_order_entropy_change(logits, pg_logit_step(logits, adv, lr, center))


def npg_entropy_change(logits: Tensor, adv: Tensor, lr: float) -> Tensor:
    """Predicted entropy change of a natural PG step: ΔH ≈ −η·Cov_{a∼π}(log π(a), A(a)).

    Shapes ``logits [..., V]``, ``adv [..., V]`` → ``[...]`` float64. The covariance between how
    likely an action is and how good it is; positive in practice, hence the monotone entropy
    decline of RLVR. Cui et al., arXiv 2505.22617, Theorem (natural PG), docs/formulas.md (HIGH).
    Notebook 04_entropy_mechanism.
    """
    return first_order_entropy_change(logits, npg_logit_step(logits, adv, lr))


def entropy_discriminator(logits: Tensor, tokens: Tensor | int | None = None) -> Tensor:
    """The entropy-change discriminator S*_k = p_k (H + log p_k) of a single-logit update.

    .. math:: \\Delta H = -\\varepsilon\\,S^*_k + O(\\varepsilon^2)
              \\quad\\text{for}\\quad \\Delta z = \\varepsilon e_k,
              \\qquad S^*_k = p_k(H + \\log p_k) = -\\partial H / \\partial z_k

    ============  ==================================================================
    argument      shape
    ============  ==================================================================
    logits        ``[..., V]`` float
    tokens        ``[...]`` ids (or one int), or None for every candidate token
    returns       ``[...]`` float64 (``[..., V]`` when ``tokens`` is None)
    ============  ==================================================================

    S* > 0 (a token likelier than e^{−H}) means rewarding it lowers the entropy. Wang et al., "On
    the Entropy Dynamics in Reinforcement Fine-Tuning of LLMs", arXiv 2602.03392 (docs/formulas.md,
    MED: read from a summary, consistent with a numeric check); it is the same derivative as in
    the Cui et al. lemma. Trinity-RFT's ``advantage_fn: clipb`` clips on it. Notebook
    04_entropy_mechanism.
    """
    s_star = -entropy_logit_gradient(logits)
    if tokens is None:
        return s_star
    k = _tokens(tokens, s_star.shape[:-1], s_star.shape[-1])
    return s_star.gather(-1, k[..., None])[..., 0]


def sampled_token_entropy_change(logits: Tensor, tokens: Tensor | int, coef: Tensor | float) -> Tensor:
    """First-order ΔH of a sampled-token step Δz = c(e_k − p), in closed form.

    .. math:: \\Delta H = -c\\Big[p_k(\\log p_k + H) - \\sum_j p_j^2(\\log p_j + H)\\Big]
              = -c\\,\\big(S^*_k - \\mathbb{E}_{j\\sim p} S^*_j\\big)

    ============  ==================================================================
    argument      shape
    ============  ==================================================================
    logits        ``[..., V]`` float
    tokens        ``[...]`` ids of the sampled tokens k (or one int)
    coef          scalar or ``[...]``: c = η·A (times the ratio) of that token
    returns       ``[...]`` float64
    ============  ==================================================================

    Δz = c(e_k − p) is the logit gradient of c·log p_k, i.e. one REINFORCE/GRPO token update. The
    second form is the baseline-corrected discriminator of arXiv 2602.03392's Theorem 3.3.
    Derived and checked numerically in docs/formulas.md (STEER note); STEER's p(1 − p)(log p + H)
    approximates the bracket (see :func:`compare_entropy_estimates`). Notebook 04_entropy_mechanism.
    """
    s_star = entropy_discriminator(logits)
    k = _tokens(tokens, s_star.shape[:-1], s_star.shape[-1])
    p = torch.softmax(_logits("logits", logits), -1)
    c = _checks.floating("coef", coef).double()
    return -c * (s_star.gather(-1, k[..., None])[..., 0] - (p * s_star).sum(-1))


def steer_omega(adv: Tensor, logp: Tensor, old_logp: Tensor, entropy: Tensor, mask: Tensor | None = None) -> Tensor:
    """STEER's estimated per-token entropy change Ω (the quantity its weights are built from).

    .. math:: \\Omega_t = \\frac{A_t}{\\pi_{old}(y_t)}\\,\\pi_\\theta(y_t)\\big(1 - \\pi_\\theta(y_t)\\big)
              \\big(\\log\\pi_\\theta(y_t) + H_t\\big)

    ============  ==================================================================
    argument      shape
    ============  ==================================================================
    adv           ``[B]`` or ``[B, T]`` float
    logp          ``[B, T]`` float, current log-prob of the sampled token
    old_logp      ``[B, T]`` float
    entropy       ``[B, T]`` float, current token entropy
    mask          ``[B, T]`` bool or None (None: every position)
    returns       ``[B, T]`` float64, signed, 0 off the mask
    ============  ==================================================================

    Sign convention: Ω > 0 means the update lowers the entropy (ΔH ≈ −η·Ω), as for S*. Relation to
    the exact first-order change of a sampled-token step Δz = c(e_k − p)
    (:func:`sampled_token_entropy_change`): keeping only the j = k term of Σ_j p_j²(log p_j + H)
    gives ΔH ≈ −c·p_k(1 − p_k)(log p_k + H), and η·Ω is that with c = η·A/π_old. (The logit
    gradient of A·π/π_old has c = A·π/π_old, one more factor of π than Ω carries; Ω is kept as
    STEER codes it.) :func:`compare_entropy_estimates` shows the gap. The weights themselves are
    :func:`forklab.regularizers.steer_weights` (which uses |Ω|). Hao et al., "Rethinking Entropy
    Interventions in RLVR: An Entropy Change Perspective", arXiv 2510.10150, code
    ``compute_token_weights`` (loss_mode ``entropy_control``), docs/formulas.md (HIGH). Notebook
    04_entropy_mechanism.
    """
    logp = _checks.as_tensor("logp", logp)
    if logp.dim() != 2:
        raise ValueError(f"`logp` must have shape [B, T], got {list(logp.shape)}")
    mask = torch.ones(logp.shape, dtype=torch.bool) if mask is None else _checks.bool_mask("mask", mask)
    logp = _checks.masked("logp", logp, mask).double()
    old_logp = _checks.masked("old_logp", old_logp, mask).double()
    entropy = _checks.masked("entropy", entropy, mask).double()
    adv = _checks.as_tensor("adv", adv)
    if adv.dim() == 1 and adv.shape[0] == logp.shape[0]:
        adv = adv[:, None].expand_as(logp)
    elif adv.shape != logp.shape:
        raise ValueError(f"`adv` must have shape [{logp.shape[0]}] or {list(logp.shape)}, got {list(adv.shape)}")
    adv = _checks.masked("adv", adv, mask).double()
    p = logp.exp()
    # A/π_old · π as A·e^(log π − log π_old): 1/π_old alone overflows below log π_old ≈ −709 (−88 in fp32)
    omega = adv * (logp - old_logp).clamp(max=700.0).exp() * (1 - p) * (logp + entropy)
    return torch.where(mask, omega, torch.zeros((), dtype=omega.dtype))


def compare_entropy_estimates(logits: Tensor, tokens: Tensor | int, coef: Tensor | float) -> dict[str, Tensor]:
    """Every estimate of ΔH next to the exact value, for a step on token k of size c.

    Two steps are compared, each ``[...]`` float64 (logits ``[..., V]``, tokens ``[...]`` or an int,
    coef scalar or ``[...]``):

    =========================  ==================================================================
    key                        value
    =========================  ==================================================================
    *sampled-token step*       Δz = c(e_k − p) (one REINFORCE/GRPO token update, ratio 1)
    ``exact``                  H(z + Δz) − H(z)
    ``first_order``            −Cov_p(log p, Δz) (arXiv 2505.22617)
    ``closed_form``            −c[p_k(log p_k + H) − Σ_j p_j²(log p_j + H)] (= ``first_order``)
    ``steer``                  −c·p_k(1 − p_k)(log p_k + H): STEER's form (−η·Ω with A/π_old = c/η)
    ``s_star``                 −c·S*_k: the single-logit discriminator, ignoring the −c·p part
    *single-logit step*        Δz = c·e_k
    ``single_logit_exact``     H(z + c e_k) − H(z)
    ``single_logit_s_star``    −c·S*_k (arXiv 2602.03392, MED)
    =========================  ==================================================================

    ``first_order − exact`` is O(c²); ``steer`` and ``s_star`` carry an O(c) modelling error on the
    sampled step (zero only in special cases), which is what notebook 04_entropy_mechanism shows.
    """
    z = _logits("logits", logits)
    k = _tokens(tokens, z.shape[:-1], z.shape[-1])
    c = _checks.floating("coef", coef).double()
    p, logp, h = _policy(z)
    one_hot = torch.nn.functional.one_hot(k, z.shape[-1]).double()
    c_v = c[..., None] if c.dim() else c
    sampled_step = c_v * (one_hot - p)
    pk, logpk = p.gather(-1, k[..., None])[..., 0], logp.gather(-1, k[..., None])[..., 0]
    s_star = pk * (h + logpk)
    return {
        "exact": exact_entropy_change(z, sampled_step),
        "first_order": first_order_entropy_change(z, sampled_step),
        "closed_form": sampled_token_entropy_change(z, k, c),
        "steer": -c * pk * (1 - pk) * (logpk + h),
        "s_star": -c * s_star,
        "single_logit_exact": exact_entropy_change(z, c_v * one_hot),
        "single_logit_s_star": -c * s_star,
    }
