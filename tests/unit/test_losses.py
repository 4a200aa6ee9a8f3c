"""The UNA loss family against float64 formulas written here, independently of una_hpc.losses.

.venv/bin/python -m pytest tests/unit/test_losses.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from una_hpc.config import LossConfig
from una_hpc.data.helpsteer import combine_attributes
from una_hpc.losses import (
    BINARY,
    KL,
    LOSSES,
    PAIR_CHOSEN,
    PAIR_REJECTED,
    SCORE,
    SeqTargets,
    dpo_loss,
    kto_loss,
    normalize_rewards,
    una_binary_loss,
    una_score_loss,
)

torch.manual_seed(0)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _rand(n: int, dtype=torch.float64) -> torch.Tensor:
    return (torch.randn(n, dtype=torch.float64) * 20 - 40).to(dtype)  # logps of ~40-token responses


# --- float64 references: plain python over elements -------------------------------------------------------------
def ref_dpo(pc, pr, rc, rr, beta):
    return sum(-math.log(_sig(beta * ((a - c) - (b - d)))) for a, b, c, d in zip(pc, pr, rc, rr)) / len(pc)


def ref_kto(p, r, y, z, beta, lw_d=1.0, lw_u=1.0):
    out = []
    for a, b, lab in zip(p, r, y):
        rew = beta * (a - b)
        out.append(lw_d * (1 - _sig(rew - beta * z)) if lab == 1 else lw_u * (1 - _sig(beta * z - rew)))
    return sum(out) / len(out)


def ref_binary(p, r, y, beta, kind):
    out = []
    for a, b, lab in zip(p, r, y):
        rew = beta * (a - b)
        if kind == "mse":
            out.append((_sig(rew) - lab) ** 2)
        else:
            out.append(-(lab * math.log(_sig(rew)) + (1 - lab) * math.log(1 - _sig(rew))))
    return sum(out) / len(out)


def ref_score(p, r, s, beta, normalize):
    f = _sig if normalize == "sigmoid" else (lambda v: v)
    return sum((f(beta * (a - b)) - t) ** 2 for a, b, t in zip(p, r, s)) / len(p)


def L(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.double()]


# --- values -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_dpo_matches_reference(dtype, tol):
    # bf16 inputs are rounded to 8 mantissa bits (~0.4% of |logp| ~ 40 => ~0.2 nats); compare to the rounded inputs.
    pc, pr, rc, rr = (_rand(16, dtype) for _ in range(4))
    got = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert got.dtype == torch.float32
    assert abs(got.item() - ref_dpo(L(pc), L(pr), L(rc), L(rr), 0.1)) < tol


@pytest.mark.parametrize("z", [0.0, 1.7])
def test_kto_matches_reference(z):
    p, r = _rand(12), _rand(12)
    y = torch.tensor([1, 0] * 6, dtype=torch.float64)
    got = kto_loss(p, r, y, torch.tensor(z), beta=0.03, desirable_weight=1.3, undesirable_weight=0.7)
    assert abs(got.item() - ref_kto(L(p), L(r), L(y), z, 0.03, 1.3, 0.7)) < 1e-6


def test_kto_clamps_negative_kl():
    p, r = _rand(6), _rand(6)
    y = torch.tensor([1, 0, 1, 0, 1, 1.0])
    assert torch.allclose(kto_loss(p, r, y, -3.0, 0.1), kto_loss(p, r, y, 0.0, 0.1))


@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_una_binary_matches_reference(kind):
    p, r = _rand(10), _rand(10)
    y = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 1, 1], dtype=torch.float64)
    got = una_binary_loss(p, r, y, beta=0.05, kind=kind)
    assert abs(got.item() - ref_binary(L(p), L(r), L(y), 0.05, kind)) < 1e-6


@pytest.mark.parametrize("normalize", ["sigmoid", "none"])
def test_una_score_matches_reference(normalize):
    p, r = _rand(10), _rand(10)
    s = torch.rand(10, dtype=torch.float64)
    got = una_score_loss(p, r, s, beta=0.03, normalize=normalize)
    assert abs(got.item() - ref_score(L(p), L(r), L(s), 0.03, normalize)) < 1e-5


# --- gradients ----------------------------------------------------------------------------------------------------
def _grad_of(fn, *inputs):
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    fn(*xs).backward()
    return [x.grad for x in xs]


def test_gradcheck_all_losses():
    # The functions compute in fp32 by contract, so gradcheck runs through a float64 mirror of the autograd graph:
    # compare analytic grads to central finite differences of the float64 reference formulas instead.
    p, r = _rand(5), _rand(5)
    y = torch.tensor([1, 0, 1, 1, 0], dtype=torch.float64)
    s = torch.rand(5, dtype=torch.float64)
    cases = {
        "binary_mse": (lambda a: una_binary_loss(a, r, y, 0.05), lambda a: ref_binary(a, L(r), L(y), 0.05, "mse")),
        "binary_bce": (
            lambda a: una_binary_loss(a, r, y, 0.05, "bce"),
            lambda a: ref_binary(a, L(r), L(y), 0.05, "bce"),
        ),
        "score": (lambda a: una_score_loss(a, r, s, 0.03), lambda a: ref_score(a, L(r), L(s), 0.03, "sigmoid")),
        "kto": (lambda a: kto_loss(a, r, y, 0.5, 0.03), lambda a: ref_kto(a, L(r), L(y), 0.5, 0.03)),
        "dpo": (lambda a: dpo_loss(a, r, p, s * 10, 0.1), lambda a: ref_dpo(a, L(r), L(p), L(s * 10), 0.1)),
    }
    for name, (fn, ref) in cases.items():
        (g,) = _grad_of(fn, p)
        h = 1e-3
        for i in range(5):
            up, down = L(p), L(p)
            up[i] += h
            down[i] -= h
            fd = (ref(up) - ref(down)) / (2 * h)
            assert abs(g[i].item() - fd) < 1e-5 + 1e-3 * abs(fd), (name, i, g[i].item(), fd)


def test_torch_gradcheck_float64_formulas():
    # torch.autograd.gradcheck on the loss functions themselves (fp32 internally: loose eps/atol accordingly).
    p = _rand(4).requires_grad_(True)
    r, s = _rand(4), torch.rand(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: una_score_loss(a, r, s, 0.03).double(), (p,), eps=1e-2, atol=1e-4)
    assert torch.autograd.gradcheck(lambda a: dpo_loss(a, r, s, s, 0.05).double(), (p,), eps=1e-2, atol=1e-4)


# --- identities ---------------------------------------------------------------------------------------------------
def test_policy_equals_reference_gives_log2_and_zero_reward():
    p = _rand(8, torch.float32)
    assert abs(dpo_loss(p, p.flip(0), p, p.flip(0), 0.1).item() - math.log(2)) < 1e-6
    t = SeqTargets(torch.tensor([PAIR_CHOSEN, PAIR_REJECTED] * 4), torch.arange(4).repeat_interleave(2), torch.zeros(8))
    out = LOSSES["dpo"](p, p, t, LossConfig(name="dpo", beta=0.1))
    assert torch.equal(out.metrics["implicit_reward"], torch.zeros(8))


def test_bce_gradient_sign():
    # A desirable example pushes its logp up (negative grad), an undesirable one down.
    p, r = torch.zeros(2, requires_grad=True), torch.zeros(2)
    una_binary_loss(p, r, torch.tensor([1.0, 0.0]), beta=0.1, kind="bce").backward()
    assert p.grad[0] < 0 < p.grad[1]


def test_combine_attributes_weights():
    row = {"helpfulness": 4, "correctness": 2, "coherence": 0, "complexity": 1, "verbosity": 3}
    assert abs(combine_attributes(row) - (0.65 * 1 + 0.8 * 0.5 + 0.45 * 0) / 1.9) < 1e-12
    assert combine_attributes(row, {"correctness": 1.0}) == 0.5
    with pytest.raises(ValueError, match="helpfulness"):
        combine_attributes({**row, "helpfulness": 5})


def test_normalize_rewards_range():
    x = torch.tensor([-3.0, 0.0, 2.0, 5.0])
    for m in ("sigmoid", "minmax", "zscore"):
        y = normalize_rewards(x, m)
        assert y.min() >= 0 and y.max() <= 1 and torch.all(y[1:] > y[:-1])
    assert torch.equal(normalize_rewards(x, "minmax"), (x + 3) / 8)


# --- registry heads -----------------------------------------------------------------------------------------------
def _mixed_batch():
    kinds = [PAIR_CHOSEN, PAIR_REJECTED, PAIR_CHOSEN, PAIR_REJECTED, BINARY, BINARY, SCORE, SCORE, SCORE, KL]
    pair = [0, 0, 1, 1, -1, -1, -1, -1, -1, -1]
    target = [0, 0, 0, 0, 1, 0, 0.2, 0.9, 0.5, 0]
    return SeqTargets(torch.tensor(kinds), torch.tensor(pair), torch.tensor(target, dtype=torch.float32))


def test_mixed_head_is_weighted_sum_of_type_means():
    t = _mixed_batch()
    p, r = _rand(10, torch.float32), _rand(10, torch.float32)
    cfg = LossConfig(name="mixed", beta=0.05, type_weights={"pairwise": 0.5, "binary": 2.0, "score": 1.5})
    head = LOSSES["mixed"]
    out = head(p, r, t, cfg)
    loss = head.loss(out, t.example_counts(), cfg)
    expect = (
        0.5 * ref_dpo(L(p[[0, 2]]), L(p[[1, 3]]), L(r[[0, 2]]), L(r[[1, 3]]), 0.05)
        + 2.0 * ref_binary(L(p[4:6]), L(r[4:6]), [1, 0], 0.05, "mse")
        + 1.5 * ref_score(L(p[6:9]), L(r[6:9]), L(t.target[6:9]), 0.05, "sigmoid")
    )
    assert abs(loss.item() - expect) < 1e-5
    margins = [0.05 * ((p[c] - r[c]) - (p[j] - r[j])).item() for c, j in ((0, 1), (2, 3))]
    assert out.metrics["pair_accuracy"].tolist() == [float(m > 0) for m in margins]
    assert out.metrics["reward_margin"].tolist() == pytest.approx(margins, abs=1e-5)


def test_pair_accuracy_and_margin_by_hand():
    # Pairs listed out of order (pair_id 2 first, rejected before chosen) so the metric must follow pair_id; in
    # pair 1 the policy's logps alone would favour the chosen response: the margin is of rewards, not logps.
    #            rows:  0 (c,p2)  1 (r,p0)  2 (c,p0)  3 (r,p1)  4 (c,p1)  5 (r,p2)  6 (KL)
    kinds = torch.tensor([PAIR_CHOSEN, PAIR_REJECTED, PAIR_CHOSEN, PAIR_REJECTED, PAIR_CHOSEN, PAIR_REJECTED, KL])
    pair_id = torch.tensor([2, 0, 0, 1, 1, 2, -1])
    policy = torch.tensor([-10.0, -12.0, -11.0, -9.0, -5.0, -8.0, -1.0])
    ref = torch.tensor([-10.0, -8.0, -14.0, -12.0, -1.0, -8.0, -3.0])
    # beta * ((pc - rc) - (pr - rr)):  pair 0: (3 - (-4)) * 0.5 = 3.5 > 0 -> 1
    #                                  pair 1: (-4 - 3) * 0.5 = -3.5 < 0 -> 0
    #                                  pair 2: (0 - 0) * 0.5 = 0, a tie: not > 0 -> 0
    t = SeqTargets(kinds, pair_id, torch.zeros(7))
    for name in ("dpo", "mixed"):
        out = LOSSES[name](policy, ref, t, LossConfig(name=name, beta=0.5))
        assert out.metrics["pair_accuracy"].tolist() == [1.0, 0.0, 0.0], name
        assert out.metrics["reward_margin"].tolist() == [3.5, -3.5, 0.0], name
        assert out.metrics["implicit_reward"].tolist() == [0.0, -2.0, 1.5, 1.5, -2.0, 0.0], name  # KL row left out


@pytest.mark.parametrize("name,kind", [("una_score", SCORE), ("una_binary", BINARY), ("dpo", PAIR_CHOSEN)])
def test_mixed_head_with_one_type_equals_that_head(name, kind):
    n = 6
    if kind == PAIR_CHOSEN:
        t = SeqTargets(
            torch.tensor([PAIR_CHOSEN, PAIR_REJECTED] * 3), torch.arange(3).repeat_interleave(2), torch.zeros(n)
        )
    else:
        target = torch.tensor([1, 0, 1, 1, 0, 0.0]) if kind == BINARY else torch.rand(n)
        t = SeqTargets(torch.full((n,), kind), torch.full((n,), -1), target)
    p, r = _rand(n, torch.float32).requires_grad_(True), _rand(n, torch.float32)
    cfg = LossConfig(name="mixed", beta=0.05)
    a = LOSSES["mixed"].loss(LOSSES["mixed"](p, r, t, cfg), t.example_counts(), cfg)
    b = LOSSES[name].loss(LOSSES[name](p, r, t, cfg), t.example_counts(), cfg)
    (ga,) = torch.autograd.grad(a, p)
    (gb,) = torch.autograd.grad(b, p)
    assert torch.equal(a, b) and torch.equal(ga, gb)


def test_global_normalizer_makes_microbatch_split_exact():
    t = _mixed_batch()
    p, r = _rand(10, torch.float32).requires_grad_(True), _rand(10, torch.float32)
    cfg = LossConfig(name="mixed", beta=0.05)
    head, counts = LOSSES["mixed"], t.example_counts()
    whole = head.loss(head(p, r, t, cfg), counts, cfg)
    halves = []
    for idx in (torch.arange(0, 6), torch.arange(6, 10)):  # pairs stay whole within a part
        sub = SeqTargets(t.kind[idx], t.pair_id[idx], t.target[idx])
        halves.append(head.loss(head(p[idx], r[idx], sub, cfg), counts, cfg))
    assert torch.allclose(whole, halves[0] + halves[1], atol=1e-7)


def test_kto_head_uses_kl_sequences():
    t = _mixed_batch()
    p, r = _rand(10, torch.float32), _rand(10, torch.float32)
    cfg = LossConfig(name="kto", beta=0.03)
    out = LOSSES["kto"](p, r, t, cfg)
    z = max(0.0, float(p[9] - r[9]))
    assert abs(out.metrics["kl_estimate"].item() - z) < 1e-5
    assert abs(out.loss_sums["binary"].item() / 2 - ref_kto(L(p[4:6]), L(r[4:6]), [1, 0], z, 0.03)) < 1e-5


# --- bad arguments ------------------------------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors():
    p = torch.zeros(3)
    with pytest.raises(ValueError, match=r"score must lie in \[0, 1\]"):
        una_score_loss(p, p, torch.tensor([0.1, 1.4, 0.2]), 0.1)
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        una_binary_loss(p, p, torch.tensor([1.0, 2.0, 0.0]), 0.1)
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        kto_loss(p, p, torch.tensor([1.0, 0.5, 0.0]), 0.0, 0.1)
    with pytest.raises(ValueError, match="shape mismatch"):
        dpo_loss(p, torch.zeros(2), p, p, 0.1)
    with pytest.raises(ValueError, match="beta must be > 0"):
        una_score_loss(p, p, p, 0.0)
    with pytest.raises(ValueError, match="1-D"):
        una_score_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 1), 0.1)
    with pytest.raises(ValueError, match="unknown loss"):
        from una_hpc.losses import get_head

        get_head("ppo2")


def test_online_logratio_rollout_is_reinforce_with_half_as_baseline():
    """loss.online_logratio=rollout (the authors' online code): the log-ratio against the sampling policy is 0 in
    the forward, so the loss is mean (0.5 - t)^2 and d loss / d logp_i = 2 (0.5 - t_i) sigma'(0) beta / n
    = (0.5 - t_i) beta / (2 n), whatever the reference says."""
    from una_hpc.config import Config
    from una_hpc.trainer.step import logratio_base

    n, beta = 6, 0.3
    cfg = Config()
    cfg.loss = LossConfig(name="una_online", beta=beta, online_logratio="rollout")
    t = SeqTargets(torch.full((n,), SCORE), torch.full((n,), -1), torch.rand(n, dtype=torch.float64))
    p = _rand(n, torch.float64).requires_grad_(True)
    head = LOSSES["una_online"]
    base = logratio_base(head, cfg, p, _rand(n, torch.float64))
    loss = head.loss(head(p, base, t, cfg.loss), t.example_counts(), cfg.loss)
    (g,) = torch.autograd.grad(loss, p)
    assert loss.item() == pytest.approx(((0.5 - t.target) ** 2).mean().item(), rel=1e-6)  # the head computes in fp32
    assert torch.allclose(g, (0.5 - t.target) * beta / (2 * n), rtol=1e-5, atol=1e-9)
    cfg.loss.online_logratio = "reference"  # the paper's form: the reference passes through untouched
    r = _rand(n, torch.float64)
    assert logratio_base(head, cfg, p, r) is r
