"""PPO baseline math (the RLHF comparison for online UNA), on padded per-token [B, T] tensors with a response mask.

Conventions (shared by every function here):
- Position t of a row holds per-token quantities of response token t: its log-prob under the policy / the rollout
  policy / the reference, the critic's value of the state in which it was generated, its reward. `mask` [B, T] is 1
  on response tokens and 0 on prompt and padding; a row's trajectory is its masked positions in order (a mask with
  gaps, e.g. tool output between turns, skips the gap). Per-token log-probs come from the fused kernel
  (`una_hpc.kernels.seq_logps`) by giving every token its own seq_index.
- All math is fp32 whatever the input dtype; every result is 0 at unmasked positions, and values there (even inf/nan
  from padding) neither reach a result nor get a gradient.
- Bad arguments raise a one-line ValueError.

Rewards follow TRL/OpenRLHF: r_t = -kl_coef * kl_t on every response token, plus the sequence score at the last
response token (kl_coef_unit="token": a response pays kl_coef * sum_t kl_t; "sequence": kl_coef * mean_t kl_t, i.e.
each token -kl_coef * kl_t / its row's response length; docs/design.md, "PPO's KL coefficient"). The sequence
scores may first be whitened over the batch and clipped (`shape_scores`). GAE treats the value after a row's last
response token as 0 (the episode ends there). The value loss is 0.5 * max((V - R)^2, (V_clip - R)^2), the 0.5 factor
as in TRL and OpenRLHF, so vf_coef means the same as there. The adaptive KL controller is in kl_control.py.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import KLEstimator, PPOConfig
from ._checks import as_fp32, check_non_negative, same_shape

KL_ESTIMATORS: tuple[str, ...] = typing.get_args(KLEstimator)
KL_UNITS: tuple[str, ...] = ("token", "sequence")


def _token_tensor(name: str, x: Tensor) -> Tensor:
    return as_fp32(name, x, ndim=2)


def _check_gae(gamma: float, lam: float) -> None:
    if not 0 <= gamma <= 1 or not 0 <= lam <= 1:
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")


def _mask(mask: Tensor, like: Tensor) -> Tensor:
    """The mask as fp32 0/1, checked against the shape of `like`."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(like.shape):
        raise ValueError(f"shape mismatch: mask{list(mask.shape)} vs values{list(like.shape)}")
    m = mask.float()
    if m.numel() and not torch.all((m == 0) | (m == 1)):
        raise ValueError("mask must hold only 0 and 1")
    return m


def _on(x: Tensor, m: Tensor) -> Tensor:
    """x on the mask, 0 off it (selected, not multiplied: inf/nan padding neither leaks nor gets a nan gradient)."""
    return torch.where(m > 0, x, torch.zeros_like(x))


def masked_sum(x: Tensor, mask: Tensor) -> Tensor:
    """sum of x over mask (entries off the mask may be inf/nan: they are selected away, not multiplied by 0)."""
    return torch.where(mask > 0, x, torch.zeros_like(x)).sum()


def masked_mean(x: Tensor, mask: Tensor, token_count: float | None = None) -> Tensor:
    """sum(x * mask) / token_count, token_count defaulting to mask.sum() (at least 1)."""
    if token_count is None:
        return masked_sum(x, mask) / mask.sum().clamp(min=1)
    if not token_count > 0:
        raise ValueError(f"token_count must be > 0, got {token_count}")
    return masked_sum(x, mask) / float(token_count)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kl_estimator: KLEstimator = PPOConfig.kl_estimator) -> Tensor:
    """Per-token KL estimate from log-ratios d = logp - ref_logp of sampled tokens (Schulman's k1/k2/k3).

    k1 = d (unbiased, can be negative), k2 = d^2 / 2, k3 = exp(-d) - 1 + d (unbiased, >= 0), abs = |d|.
    """
    d = logprobs.float() - ref_logprobs.float()
    if kl_estimator == "k1":
        return d
    if kl_estimator == "k2":
        return 0.5 * d * d
    if kl_estimator == "k3":
        return torch.expm1(-d) + d
    if kl_estimator == "abs":
        return d.abs()
    raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {kl_estimator!r}")


def last_token_index(mask: Tensor) -> Tensor:
    """[B] index of each row's last masked position; ValueError if a row has none."""
    m = mask.float()
    if m.numel() and bool((m.sum(dim=1) == 0).any()):
        row = int(torch.nonzero(m.sum(dim=1) == 0)[0])
        raise ValueError(f"row {row} has no response token (mask is all 0)")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return torch.where(m > 0, positions, torch.full_like(positions, -1)).max(dim=1).values


@torch.no_grad()
def kl_penalized_rewards(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    scores: Tensor,
    kl_coef: float,
    kl_estimator: KLEstimator = PPOConfig.kl_estimator,
    kl_coef_unit: str = PPOConfig.kl_coef_unit,
) -> tuple[Tensor, Tensor]:
    """Per-token rewards [B, T] = -kl_coef * kl (kl_coef_unit="sequence": -kl_coef * kl / the row's response
    length), plus scores[b] at row b's last response token; and kl [B, T].

    `logprobs` are the rollout policy's log-probs of the sampled tokens, `scores` [B] the sequence rewards (e.g.
    reward-model outputs). Both results are detached and 0 off the mask.
    """
    if kl_coef_unit not in KL_UNITS:
        raise ValueError(f"kl_coef_unit must be one of {', '.join(KL_UNITS)}, got {kl_coef_unit!r}")
    lp, ref = _token_tensor("logprobs", logprobs), _token_tensor("ref_logprobs", ref_logprobs)
    same_shape(logprobs=lp, ref_logprobs=ref)
    m = _mask(mask, lp)
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != lp.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be [{lp.shape[0]}] (one per row), got {shape}")
    check_non_negative("kl_coef", kl_coef)
    kl = kl_penalty(_on(lp, m), _on(ref, m), kl_estimator)  # 0 off the mask for every estimator
    rewards = -kl_coef * kl
    last = last_token_index(m)  # also refuses a row without response tokens, before the division below
    if kl_coef_unit == "sequence":
        rewards = rewards / m.sum(dim=1, keepdim=True)
    rewards[torch.arange(lp.shape[0], device=lp.device), last] += scores.float()
    return rewards, kl


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over each row's masked positions; returns (advantages, returns) [B, T].

    delta_t = r_t + gamma * V_next - V_t and A_t = delta_t + gamma * lam * A_next, where "next" is the row's next
    masked position and V_next = A_next = 0 after its last one. returns = advantages + values. No gradient.
    """
    r, v = _token_tensor("rewards", rewards), _token_tensor("values", values)
    same_shape(rewards=r, values=v)
    m = _mask(mask, r)
    _check_gae(gamma, lam)
    b, t_len = r.shape
    advantages = torch.zeros_like(r)
    next_value = r.new_zeros(b)
    next_adv = r.new_zeros(b)
    for t in reversed(range(t_len)):
        on = m[:, t] > 0
        delta = r[:, t] + gamma * next_value - v[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(on, adv, torch.zeros_like(adv))
        next_value = torch.where(on, v[:, t], next_value)
        next_adv = torch.where(on, adv, next_adv)
    returns = _on(advantages + v, m)
    return advantages, returns


Reduce = Callable[[Tensor], Tensor]
"""Sums a tensor over data-parallel ranks (TrainEngine.all_reduce_dp): batch statistics become global ones."""


def _local(t: Tensor) -> Tensor:
    return t


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce: Reduce | None = None) -> Tensor:
    """Masked whitening: (x - mean) / sqrt(var + eps) over masked entries (unbiased var, as TRL's masked_whiten).

    shift_mean=False adds the mean back (scale only, as for rewards). Unmasked positions come back 0. `reduce`:
    mean and variance over every rank's entries (None: this batch's).
    """
    reduce = reduce or _local
    xf = _token_tensor("x", x)
    m = _mask(mask, xf)
    n, total = reduce(torch.stack([m.sum(), masked_sum(xf, m)]))
    if n == 0:
        raise ValueError("cannot whiten: mask selects no element")
    mean = total / n
    var = reduce(masked_sum((xf - mean) ** 2, m)) / (n - 1).clamp(min=1)
    out = (xf - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _on(out, m)


def masked_sum_rows(x: Tensor, mask: Tensor) -> Tensor:
    """[B] per-row sum of x over mask (off-mask entries selected away)."""
    return torch.where(mask > 0, x, torch.zeros_like(x)).sum(dim=1)


def sequence_kl(kl: Tensor, mask: Tensor, kl_coef_unit: str = PPOConfig.kl_coef_unit) -> Tensor:
    """[B] each row's KL in the unit kl_coef weighs: sum_t kl_t ("token") or mean_t kl_t ("sequence")."""
    k = _token_tensor("kl", kl)
    m = _mask(mask, k)
    total = masked_sum_rows(k, m)
    return total if kl_coef_unit == "token" else total / m.sum(dim=1).clamp(min=1)


@torch.no_grad()
def shape_scores(
    scores: Tensor, whiten_scores: bool = False, clip: float = 0.0, eps: float = 1e-8, reduce: Reduce | None = None
) -> Tensor:
    """Sequence rewards [B] as PPO trains on them: whitened over the batch (mean 0, unbiased std 1; `reduce`: over
    every rank's batch) when asked, then clipped to [-clip, clip] when clip > 0. fp32, detached."""
    s = as_fp32("scores", scores, ndim=1)
    check_non_negative("reward_clip", clip)
    if whiten_scores:
        reduce = reduce or _local
        n, total = reduce(torch.stack([s.new_tensor(float(s.numel())), s.sum()]))
        mean = total / n
        if n > 1:
            var = reduce(((s - mean) ** 2).sum()) / (n - 1)
            s = (s - mean) * torch.rsqrt(var + eps)
        else:
            s = s - mean
    return s.clamp(-clip, clip) if clip > 0 else s


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_range: float,
    token_count: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate: mean over tokens of max(-A * ratio, -A * clip(ratio, 1-eps, 1+eps)), ratio = e^(lp-old).

    `token_count` replaces mask.sum() as the divisor (the optimizer step's response-token total under gradient
    accumulation, so any micro-batch split gives the same gradient). Stats (detached scalars): clipfrac (fraction of
    tokens where the clipped term is taken), approx_kl (0.5 * mean (lp - old)^2, as TRL), ratio (mean ratio).
    """
    lp, old = _token_tensor("logprobs", logprobs), _token_tensor("old_logprobs", old_logprobs)
    adv = _token_tensor("advantages", advantages)
    same_shape(logprobs=lp, old_logprobs=old, advantages=adv)
    m = _mask(mask, lp)
    check_non_negative("clip_range", clip_range)
    lp, old, adv = _on(lp, m), _on(old.detach(), m), _on(adv.detach(), m)
    log_ratio = lp - old
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), m, token_count)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), m),
            "approx_kl": 0.5 * masked_mean(log_ratio**2, m),
            "ratio": masked_mean(ratio, m),
        }
    return loss, stats


def ppo_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range_value: float,
    token_count: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss: 0.5 * mean over tokens of max((V - R)^2, (V_clip - R)^2), V_clip = old + clip(V - old).

    The 0.5 factor follows TRL and OpenRLHF. Stats (detached scalars): vf_clipfrac (fraction of tokens where the
    clipped error is taken), value_error (mean (V - R)^2).
    """
    v, old = _token_tensor("values", values), _token_tensor("old_values", old_values)
    ret = _token_tensor("returns", returns)
    same_shape(values=v, old_values=old, returns=ret)
    m = _mask(mask, v)
    check_non_negative("clip_range_value", clip_range_value)
    v, old, ret = _on(v, m), _on(old.detach(), m), _on(ret.detach(), m)
    v_clipped = old + torch.clamp(v - old, -clip_range_value, clip_range_value)
    err = (v - ret) ** 2
    err_clipped = (v_clipped - ret) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), m, token_count)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((err_clipped > err).float(), m), "value_error": masked_mean(err, m)}
    return loss, stats


@dataclass(frozen=True)
class PPOTargets:
    """What one rollout batch is trained toward during the PPO epochs (all detached, [B, T])."""

    rewards: Tensor
    kl: Tensor
    advantages: Tensor
    """Whitened over the batch when PPOLoss.whiten_advantages (the default, as TRL)."""
    returns: Tensor
    scores: Tensor | None = None
    """[B] the sequence rewards after `shape_scores` (what the last response token got)."""

    def rows(self, index: Tensor | slice) -> PPOTargets:
        """The targets of some rows (a PPO micro-batch)."""
        scores = None if self.scores is None else self.scores[index]
        return PPOTargets(self.rewards[index], self.kl[index], self.advantages[index], self.returns[index], scores)


@dataclass(frozen=True)
class PPOLoss:
    """PPO hyper-parameters + the two steps the trainer needs; numeric defaults are PPOConfig's (read, not copied).

    ppo = PPOLoss.from_config(cfg.ppo)
    targets = ppo.targets(old_logprobs, ref_logprobs, old_values, mask, scores)    # once per rollout batch
    loss, stats = ppo(logprobs, old_logprobs, values, old_values, targets, mask)   # every PPO micro-batch
    """

    kl_coef: float = PPOConfig.kl_coef
    clip_range: float = PPOConfig.clip_range
    clip_range_value: float = PPOConfig.clip_range_value
    vf_coef: float = PPOConfig.vf_coef
    gamma: float = PPOConfig.gamma
    lam: float = PPOConfig.lam
    kl_estimator: KLEstimator = PPOConfig.kl_estimator
    """Per-token KL estimate in the reward (PPOConfig has no key for it yet)."""
    whiten_advantages: bool = PPOConfig.whiten_advantages
    """Whiten advantages over the rollout batch's response tokens (TRL / OpenRLHF default)."""
    kl_coef_unit: str = PPOConfig.kl_coef_unit
    """What kl_coef multiplies: "token" (sum_t kl_t per response) or "sequence" (mean_t kl_t)."""
    reward_whiten: bool = PPOConfig.reward_whiten
    """Whiten the batch's sequence scores before clipping and KL shaping."""
    reward_clip: float = PPOConfig.reward_clip
    """Clip sequence scores to [-reward_clip, reward_clip]; 0 = off."""

    def __post_init__(self) -> None:
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        if self.kl_coef_unit not in KL_UNITS:
            raise ValueError(f"kl_coef_unit must be one of {', '.join(KL_UNITS)}, got {self.kl_coef_unit!r}")
        for name in ("kl_coef", "clip_range", "clip_range_value", "vf_coef", "reward_clip"):
            check_non_negative(name, getattr(self, name))
        _check_gae(self.gamma, self.lam)

    @classmethod
    def from_config(cls, cfg: PPOConfig, **overrides: object) -> PPOLoss:
        """Take every PPOConfig field this dataclass has (extra config keys such as `epochs` are the trainer's)."""
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in vars(cfg).items() if k in names}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @torch.no_grad()
    def targets(
        self,
        logprobs: Tensor,
        ref_logprobs: Tensor,
        values: Tensor,
        mask: Tensor,
        scores: Tensor,
        kl_coef: float | None = None,
        reduce: Reduce | None = None,
    ) -> PPOTargets:
        """Rollout batch -> shaped scores -> KL-shaped rewards -> GAE -> (whitened) advantages and returns.
        `kl_coef` (an adaptive controller's current value) replaces self.kl_coef when given; `reduce` makes score
        and advantage whitening global over data-parallel ranks."""
        beta = self.kl_coef if kl_coef is None else kl_coef
        shaped = shape_scores(scores, self.reward_whiten, self.reward_clip, reduce=reduce)
        rewards, kl = kl_penalized_rewards(
            logprobs, ref_logprobs, mask, shaped, beta, self.kl_estimator, self.kl_coef_unit
        )
        advantages, returns = gae(rewards, values, mask, self.gamma, self.lam)
        if self.whiten_advantages:
            advantages = whiten(advantages, mask, reduce=reduce)
        return PPOTargets(rewards, kl, advantages, returns, shaped)

    def __call__(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        values: Tensor,
        old_values: Tensor,
        targets: PPOTargets,
        mask: Tensor,
        token_count: float | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """policy_loss + vf_coef * value_loss, with both losses' stats plus `policy_loss` and `value_loss`."""
        pg, pg_stats = ppo_policy_loss(logprobs, old_logprobs, targets.advantages, mask, self.clip_range, token_count)
        vf, vf_stats = ppo_value_loss(values, old_values, targets.returns, mask, self.clip_range_value, token_count)
        stats = {**pg_stats, **vf_stats, "policy_loss": pg.detach(), "value_loss": vf.detach()}
        return pg + self.vf_coef * vf, stats
