"""PPO math (una_hpc.losses.ppo) against independent references written here: python loops in float64."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from una_hpc.config import PPOConfig
from una_hpc.losses.ppo import (
    PPOLoss,
    gae,
    kl_penalized_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)

# ---------------------------------------------------------------- references (float64, python loops)


def ref_gae(rewards, values, mask, gamma, lam):
    adv = [[0.0] * len(r) for r in rewards]
    ret = [[0.0] * len(r) for r in rewards]
    for b in range(len(rewards)):
        steps = [t for t in range(len(mask[b])) if mask[b][t]]
        last, next_v = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[b][t] + gamma * next_v - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
            ret[b][t] = last + values[b][t]
            next_v = values[b][t]
    return adv, ret


def ref_rewards(lp, ref, mask, scores, coef, estimator):
    rewards = [[0.0] * len(r) for r in lp]
    kls = [[0.0] * len(r) for r in lp]
    for b in range(len(lp)):
        last = max(t for t in range(len(mask[b])) if mask[b][t])
        for t in range(len(lp[b])):
            if not mask[b][t]:
                continue
            d = lp[b][t] - ref[b][t]
            kl = {"k1": d, "k2": d * d / 2, "k3": math.exp(-d) - 1 + d, "abs": abs(d)}[estimator]
            kls[b][t] = kl
            rewards[b][t] = -coef * kl + (scores[b] if t == last else 0.0)
    return rewards, kls


def ref_policy(lp, old, adv, mask, eps):
    total, n, clipped_count, sq = 0.0, 0, 0, 0.0
    for b in range(len(lp)):
        for t in range(len(lp[b])):
            if not mask[b][t]:
                continue
            ratio = math.exp(lp[b][t] - old[b][t])
            a = -adv[b][t] * ratio
            c = -adv[b][t] * min(max(ratio, 1 - eps), 1 + eps)
            total += max(a, c)
            clipped_count += c > a
            sq += (lp[b][t] - old[b][t]) ** 2
            n += 1
    return total / n, clipped_count / n, 0.5 * sq / n


def ref_value(v, old, ret, mask, eps):
    total, n, clipped_count = 0.0, 0, 0
    for b in range(len(v)):
        for t in range(len(v[b])):
            if not mask[b][t]:
                continue
            vc = old[b][t] + min(max(v[b][t] - old[b][t], -eps), eps)
            e, ec = (v[b][t] - ret[b][t]) ** 2, (vc - ret[b][t]) ** 2
            total += max(e, ec)
            clipped_count += ec > e
            n += 1
    return 0.5 * total / n, clipped_count / n


# ---------------------------------------------------------------- helpers


def random_mask(b: int, t: int, seed: int, gaps: bool = False) -> torch.Tensor:
    """Rows = prompt zeros, then a response of random length, then padding; optionally holes inside the response."""
    rng = random.Random(seed)
    mask = torch.zeros(b, t)
    for i in range(b):
        start = rng.randint(0, t // 2)
        length = rng.randint(1, t - start)
        mask[i, start : start + length] = 1
        if gaps and length > 3:
            hole = rng.randint(start + 1, start + length - 2)
            mask[i, hole] = 0
    return mask


def rows(x: torch.Tensor) -> list[list[float]]:
    return x.double().tolist()


def close(a: torch.Tensor, ref, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a.double(), torch.tensor(ref, dtype=torch.float64), atol=tol, rtol=tol)


# ---------------------------------------------------------------- GAE


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (0.9, 0.0), (1.0, 1.0)])
@pytest.mark.parametrize("gaps", [False, True])
def test_gae_matches_loop_reference(gamma, lam, gaps):
    g = torch.Generator().manual_seed(1)
    b, t = 6, 17
    mask = random_mask(b, t, seed=int(gamma * 100 + lam * 10 + gaps), gaps=gaps)
    rewards = torch.randn(b, t, generator=g) * mask
    values = torch.randn(b, t, generator=g)  # garbage off the mask must not leak in
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = ref_gae(rows(rewards), rows(values), mask.bool().tolist(), gamma, lam)
    close(adv, ref_adv)
    close(ret, ref_ret)
    assert not adv.requires_grad and adv.dtype == torch.float32


def test_gae_lambda_one_is_monte_carlo_return_minus_value():
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.float32)
    rewards = torch.tensor([[0, 0.5, -1.0, 2.0, 0], [1.0, 3.0, 0, 0, 0]])
    values = torch.tensor([[9.0, 0.1, 0.2, 0.3, 9.0], [0.4, 0.5, 9.0, 9.0, 9.0]])
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    expected = [[0, 1.5 - 0.1, 1.0 - 0.2, 2.0 - 0.3, 0], [4.0 - 0.4, 3.0 - 0.5, 0, 0, 0]]
    close(adv, expected)
    close(ret, [[0, 1.5, 1.0, 2.0, 0], [4.0, 3.0, 0, 0, 0]])


def test_gae_needs_no_grad_inputs():
    values = torch.randn(2, 4, requires_grad=True)
    adv, ret = gae(torch.ones(2, 4), values, torch.ones(2, 4), 1.0, 0.95)
    assert not adv.requires_grad and not ret.requires_grad


# ---------------------------------------------------------------- rewards


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "abs"])
def test_kl_penalized_rewards(estimator):
    g = torch.Generator().manual_seed(2)
    b, t = 5, 11
    mask = random_mask(b, t, seed=3)
    lp, ref = -torch.rand(b, t, generator=g) * 3, -torch.rand(b, t, generator=g) * 3
    scores = torch.randn(b, generator=g)
    rewards, kl = kl_penalized_rewards(lp, ref, mask, scores, 0.1, estimator)
    ref_r, ref_kl = ref_rewards(rows(lp), rows(ref), mask.bool().tolist(), scores.double().tolist(), 0.1, estimator)
    close(rewards, ref_r)
    close(kl, ref_kl)


def test_rewards_score_lands_on_last_response_token_and_sum_is_score_minus_kl():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    lp = torch.full((3, 6), -1.0)
    rewards, kl = kl_penalized_rewards(lp, lp.clone(), mask, torch.tensor([2.0, -1.0, 0.5]), kl_coef=0.3)
    assert rewards[0, 4] == 2.0 and rewards[1, 5] == -1.0 and rewards[2, 1] == 0.5
    assert int((rewards != 0).sum()) == 3 and int((kl != 0).sum()) == 0  # policy == ref: no penalty
    lp2 = lp + torch.linspace(0, 1, 6)
    rewards, kl = kl_penalized_rewards(lp2, lp, mask, torch.zeros(3), kl_coef=0.3)
    close(rewards.sum(dim=1), (-0.3 * ((lp2 - lp) * mask).sum(dim=1)).tolist())


def test_rewards_reject_bad_args():
    lp, mask = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        kl_penalized_rewards(lp, torch.zeros(2, 4), mask, torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="scores"):
        kl_penalized_rewards(lp, lp, mask, torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="no response token"):
        kl_penalized_rewards(lp, lp, torch.tensor([[1, 1, 0], [0, 0, 0]]), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_penalized_rewards(lp, lp, mask, torch.zeros(2), 0.1, "k9")
    with pytest.raises(ValueError, match="kl_coef"):
        kl_penalized_rewards(lp, lp, mask, torch.zeros(2), -1.0)


# ---------------------------------------------------------------- whitening


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten(shift_mean):
    g = torch.Generator().manual_seed(4)
    mask = random_mask(4, 9, seed=5, gaps=True)
    x = torch.randn(4, 9, generator=g) * 3 + 2
    out = whiten(x, mask, shift_mean=shift_mean)
    picked = [v for v, m in zip(x.double().flatten().tolist(), mask.flatten().tolist()) if m]
    mean, var = statistics.fmean(picked), statistics.variance(picked)
    expected = [
        [((v - mean) / math.sqrt(var + 1e-8) + (0 if shift_mean else mean)) if m else 0.0 for v, m in zip(xr, mr)]
        for xr, mr in zip(x.double().tolist(), mask.tolist())
    ]
    close(out, expected)
    x2 = torch.where(mask > 0, x, torch.full_like(x, 1e6))  # values off the mask do not matter
    close(whiten(x2, mask, shift_mean=shift_mean), expected)


def test_whiten_rejects_empty_mask():
    with pytest.raises(ValueError, match="no element"):
        whiten(torch.ones(2, 2), torch.zeros(2, 2))


# ---------------------------------------------------------------- policy loss


def test_policy_loss_matches_reference():
    g = torch.Generator().manual_seed(6)
    b, t = 5, 13
    mask = random_mask(b, t, seed=7, gaps=True)
    old = -torch.rand(b, t, generator=g) * 2
    lp = old + torch.randn(b, t, generator=g) * 0.3
    adv = torch.randn(b, t, generator=g)
    loss, stats = ppo_policy_loss(lp, old, adv, mask, 0.2)
    ref_loss, ref_clipfrac, ref_kl = ref_policy(rows(lp), rows(old), rows(adv), mask.bool().tolist(), 0.2)
    assert 0 < ref_clipfrac < 1  # the batch exercises both branches
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(ref_clipfrac, abs=1e-6)
    assert stats["approx_kl"].item() == pytest.approx(ref_kl, rel=1e-5)
    half, _ = ppo_policy_loss(lp, old, adv, mask, 0.2, token_count=2 * mask.sum().item())
    assert half.item() == pytest.approx(ref_loss / 2, rel=1e-5, abs=1e-6)


def test_policy_clipping_zeroes_gradient_where_it_should():
    eps = 0.2
    # token: (log ratio, advantage, gradient-active?)
    cases = [
        (math.log(1.5), 1.0, False),  # ratio above 1+eps, A > 0: clipped, no gradient
        (math.log(0.5), -1.0, False),  # ratio below 1-eps, A < 0: clipped, no gradient
        (math.log(1.5), -1.0, True),  # ratio above 1+eps, A < 0: unclipped (pessimistic) term
        (math.log(0.5), 1.0, True),  # ratio below 1-eps, A > 0: unclipped term
        (math.log(1.1), 2.0, True),  # inside the trust region
        (math.log(0.9), -2.0, True),
    ]
    log_ratio = torch.tensor([[c[0] for c in cases]])
    adv = torch.tensor([[c[1] for c in cases]])
    old = torch.full_like(log_ratio, -1.0)
    lp = (old + log_ratio).requires_grad_(True)
    mask = torch.ones_like(lp)
    loss, stats = ppo_policy_loss(lp, old, adv, mask, eps)
    loss.backward()
    n = len(cases)
    for i, (lr, a, active) in enumerate(cases):
        expected = -a * math.exp(lr) / n if active else 0.0
        assert lp.grad[0, i].item() == pytest.approx(expected, abs=1e-6), cases[i]
    assert stats["clipfrac"].item() == pytest.approx(2 / n)


def test_policy_loss_masked_tokens_get_no_gradient():
    lp = torch.randn(2, 5, generator=torch.Generator().manual_seed(12)).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]])
    loss, _ = ppo_policy_loss(lp, lp.detach() - 0.05, torch.ones(2, 5), mask, 0.2)  # ratio inside the clip
    loss.backward()
    assert torch.all(lp.grad[mask == 0] == 0) and torch.all(lp.grad[mask == 1] != 0)


def test_padding_garbage_does_not_leak():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    lp = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, float("nan"), 80.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -2.0, 0.0], [-0.5, 0.0, -80.0]])
    loss, stats = ppo_policy_loss(lp, old, torch.ones(2, 3), mask, 0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all() and torch.all(lp.grad[mask == 0] == 0)
    rewards, kl = kl_penalized_rewards(lp.detach(), old, mask, torch.zeros(2), 0.1, "k3")
    assert torch.isfinite(rewards).all() and torch.all(kl[mask == 0] == 0)
    adv, ret = gae(rewards, lp.detach(), mask, 1.0, 0.95)
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all() and torch.isfinite(whiten(lp.detach(), mask)).all()
    values = lp.detach().clone().requires_grad_(True)
    v, _ = ppo_value_loss(values, old, old, mask, 0.2)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(values.grad).all() and torch.all(values.grad[mask == 0] == 0)


def test_policy_loss_computes_in_fp32():
    lp = torch.randn(2, 4).bfloat16()
    loss, _ = ppo_policy_loss(lp, lp, torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(2, 4), 0.2)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(-1.0)


# ---------------------------------------------------------------- value loss


def test_value_loss_matches_reference():
    g = torch.Generator().manual_seed(8)
    b, t = 4, 10
    mask = random_mask(b, t, seed=9)
    old = torch.randn(b, t, generator=g)
    v = old + torch.randn(b, t, generator=g) * 0.4
    ret = torch.randn(b, t, generator=g)
    loss, stats = ppo_value_loss(v, old, ret, mask, 0.2)
    ref_loss, ref_clipfrac = ref_value(rows(v), rows(old), rows(ret), mask.bool().tolist(), 0.2)
    assert 0 < ref_clipfrac < 1
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert stats["vf_clipfrac"].item() == pytest.approx(ref_clipfrac, abs=1e-6)


def test_value_clipping_gradient():
    # (v - old, return - old, active?): moving past the clip *toward* the return takes the clipped (constant, larger)
    # error, so no gradient; moving past it away from the return keeps the unclipped (larger) error and its gradient.
    cases = [
        (0.5, 1.0, False),
        (-0.5, -1.0, False),
        (0.5, 0.6, False),
        (0.5, -1.0, True),
        (-0.5, 1.0, True),
        (0.1, 1.0, True),
    ]
    old = torch.zeros(1, len(cases))
    v = torch.tensor([[c[0] for c in cases]], requires_grad=True)
    ret = torch.tensor([[c[1] for c in cases]])
    loss, _ = ppo_value_loss(v, old, ret, torch.ones_like(old), 0.2)
    loss.backward()
    for i, (dv, r, active) in enumerate(cases):
        expected = (dv - r) / len(cases) if active else 0.0  # d/dv 0.5 (v - R)^2 / n
        assert v.grad[0, i].item() == pytest.approx(expected, abs=1e-6), cases[i]


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize("fn", ["policy", "value"])
def test_losses_reject_bad_args(fn):
    call = ppo_policy_loss if fn == "policy" else ppo_value_loss
    a, m = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        call(a, a, torch.zeros(2, 4), m, 0.2)
    with pytest.raises(ValueError, match="shape mismatch"):
        call(a, a, a, torch.ones(3, 2), 0.2)
    with pytest.raises(ValueError, match="2-D"):
        call(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(3), 0.2)
    with pytest.raises(ValueError, match="floating-point"):
        call(torch.zeros(2, 3, dtype=torch.long), a, a, m, 0.2)
    with pytest.raises(ValueError, match="only 0 and 1"):
        call(a, a, a, m * 2, 0.2)
    with pytest.raises(ValueError, match=">= 0"):
        call(a, a, a, m, -0.1)
    with pytest.raises(ValueError, match="token_count"):
        call(a, a, a, m, 0.2, token_count=0)


def test_gae_rejects_bad_args():
    with pytest.raises(ValueError, match="shape mismatch"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 0.95)
    with pytest.raises(ValueError, match="gamma"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), 1.5, 0.95)


# ---------------------------------------------------------------- the dataclass


def test_ppo_loss_defaults_come_from_config_and_pipeline_composes():
    cfg = PPOConfig()
    default = PPOLoss()
    for name in ("kl_coef", "clip_range", "clip_range_value", "vf_coef", "gamma", "lam"):
        assert getattr(default, name) == getattr(cfg, name)
    ppo = PPOLoss.from_config(PPOConfig(kl_coef=0.3, vf_coef=0.5, gamma=0.99), kl_estimator="k3")
    assert (ppo.kl_coef, ppo.vf_coef, ppo.gamma, ppo.kl_estimator) == (0.3, 0.5, 0.99, "k3")

    g = torch.Generator().manual_seed(10)
    b, t = 4, 9
    mask = random_mask(b, t, seed=11)
    old_lp, ref_lp = -torch.rand(b, t, generator=g), -torch.rand(b, t, generator=g)
    old_v, scores = torch.randn(b, t, generator=g), torch.randn(b, generator=g)
    targets = ppo.targets(old_lp, ref_lp, old_v, mask, scores)
    r, _ = ref_rewards(rows(old_lp), rows(ref_lp), mask.bool().tolist(), scores.double().tolist(), 0.3, "k3")
    adv, ret = ref_gae(r, rows(old_v), mask.bool().tolist(), 0.99, ppo.lam)
    close(targets.rewards, r)
    close(targets.returns, ret)
    close(targets.advantages, whiten(torch.tensor(adv), mask).tolist())

    lp = (old_lp + 0.1 * torch.randn(b, t, generator=g)).requires_grad_(True)
    v = (old_v + 0.3 * torch.randn(b, t, generator=g)).requires_grad_(True)
    loss, stats = ppo(lp, old_lp, v, old_v, targets, mask)
    pg, _ = ppo_policy_loss(lp, old_lp, targets.advantages, mask, ppo.clip_range)
    vf, _ = ppo_value_loss(v, old_v, targets.returns, mask, ppo.clip_range_value)
    assert loss.item() == pytest.approx((pg + 0.5 * vf).item(), rel=1e-6)
    assert {"clipfrac", "approx_kl", "vf_clipfrac", "policy_loss", "value_loss"} <= set(stats)
    loss.backward()
    assert lp.grad.abs().sum() > 0 and v.grad.abs().sum() > 0
    part = targets.rows(slice(0, 2))
    assert part.advantages.shape == (2, t)
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOLoss(kl_estimator="kl")
    with pytest.raises(ValueError, match="vf_coef"):
        PPOLoss.from_config(PPOConfig(vf_coef=-1.0))
