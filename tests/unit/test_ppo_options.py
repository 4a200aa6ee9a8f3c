"""PPO as people run it (issue 16, item 1): KL unit, reward whitening / clipping, adaptive KL, minibatches, critic
start and learning rate, each against a reference written here (float64 python).

    .venv/bin/python -m pytest tests/unit/test_ppo_options.py -x -q
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from una_hpc.config import ConfigError, load_config
from una_hpc.losses.kl_control import KLController
from una_hpc.losses.ppo import PPOLoss, kl_penalized_rewards, sequence_kl, shape_scores
from una_hpc.models.value import ValueModel
from una_hpc.trainer.ppo_setup import critic_cfg, critic_source, minibatches, policy_cfg

LP = [[-1.0, -2.0, -0.5, 0.0], [-0.3, -0.7, 0.0, 0.0]]
REF = [[-1.5, -1.0, -0.5, 0.0], [-0.1, -0.2, 0.0, 0.0]]
MASK = [[1, 1, 1, 0], [1, 1, 0, 0]]
SCORES = [2.0, -1.0]


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def _close(got: torch.Tensor, want: list[list[float]]) -> None:
    torch.testing.assert_close(got.double(), _t(want), atol=1e-5, rtol=0)


def ref_rewards(beta: float, unit: str) -> list[list[float]]:
    out = []
    for lp, ref, m, s in zip(LP, REF, MASK, SCORES):
        n = sum(m)
        row = [-beta * (a - b) * (1.0 if unit == "token" else 1.0 / n) if k else 0.0 for a, b, k in zip(lp, ref, m)]
        row[n - 1] += s
        out.append(row)
    return out


@pytest.mark.parametrize("unit", ["token", "sequence"])
def test_kl_coef_unit_token_sums_and_sequence_averages(unit):
    rewards, kl = kl_penalized_rewards(_t(LP), _t(REF), _t(MASK), _t(SCORES), 10.0, "k1", unit)
    _close(rewards, ref_rewards(10.0, unit))
    # A response pays beta x (sum of its token KLs) under token, beta x their mean under sequence.
    sums = [sum((a - b) for a, b, k in zip(lp, ref, m) if k) for lp, ref, m in zip(LP, REF, MASK)]
    want = sums if unit == "token" else [s / sum(m) for s, m in zip(sums, MASK)]
    assert sequence_kl(kl, _t(MASK), unit).tolist() == pytest.approx(want, abs=1e-6)
    penalty = [SCORES[b] - float(rewards[b].sum()) for b in range(2)]
    assert penalty == pytest.approx([10.0 * w for w in want], abs=1e-5)


def test_reward_whitening_then_clipping():
    s = [3.0, 1.0, -2.0, 6.0]
    mean = sum(s) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / 3 + 1e-8)  # unbiased, as advantage whitening
    white = [(x - mean) / std for x in s]
    assert shape_scores(_t(s), whiten_scores=True).tolist() == pytest.approx(white, abs=1e-6)
    assert shape_scores(_t(s), clip=2.5).tolist() == [2.5, 1.0, -2.0, 2.5]
    both = shape_scores(_t(s), whiten_scores=True, clip=0.5).tolist()
    assert both == pytest.approx([max(-0.5, min(0.5, w)) for w in white], abs=1e-6)
    # PPOLoss.targets puts the shaped score at the last response token and keeps it.
    loss = PPOLoss(kl_coef=0.0, reward_clip=1.5, whiten_advantages=False, lam=1.0)
    t = loss.targets(_t(LP), _t(REF), torch.zeros(2, 4), _t(MASK), _t(SCORES))
    assert t.scores.tolist() == [1.5, -1.0] and t.rewards[0, 2].item() == 1.5


def test_adaptive_kl_controller_follows_the_reference_rule():
    beta, target, horizon = 0.1, 6.0, 1000
    ctl = KLController(beta, target, horizon)
    for kl, n in [(12.0, 64), (3.0, 64), (6.6, 32), (float("nan"), 8), (0.0, 500)]:
        if math.isfinite(kl):
            beta *= 1 + min(max(kl / target - 1, -0.2), 0.2) * n / horizon
        assert ctl.update(kl, n) == pytest.approx(beta, rel=1e-12)
    fixed = KLController(0.05, 0.0)
    assert fixed.update(100.0, 64) == 0.05 and not fixed.adaptive
    # The coefficient a step passes to targets() is the one its rewards carry.
    t = PPOLoss(kl_coef=99.0).targets(_t(LP), _t(REF), torch.zeros(2, 4), _t(MASK), _t(SCORES), kl_coef=2.0)
    _close(t.rewards, ref_rewards(2.0, "token"))


def test_minibatches_partition_a_ranks_rollouts_reproducibly():
    mbs = minibatches(12, 3, seed=5)
    assert len(mbs) == 3 and all(len(m) == 4 for m in mbs)
    assert sorted(i for m in mbs for i in m) == list(range(12))
    assert mbs == minibatches(12, 3, seed=5) and mbs != minibatches(12, 3, seed=6)
    assert minibatches(5, 1, seed=0) == [[0, 1, 2, 3, 4]]  # one minibatch: every row, in order
    with pytest.raises(ConfigError, match="ppo.num_minibatches=3 must divide this rank's 8 rollouts"):
        minibatches(8, 3, seed=0)


def test_config_keys_and_engine_settings():
    cfg = load_config(
        None,
        ["loss.name=ppo", "ppo.epochs=3", "ppo.num_minibatches=4", "ppo.critic_lr=2e-5", "trainer.max_steps=10"],
    )
    assert policy_cfg(cfg).trainer.max_steps == 120 and policy_cfg(cfg).optim.lr == cfg.optim.lr
    assert critic_cfg(cfg).optim.lr == 2e-5 and critic_cfg(cfg).trainer.max_steps == 120
    cfg.ppo.critic_lr = 0.0
    assert critic_cfg(cfg).optim.lr == cfg.optim.lr
    with pytest.raises(ConfigError, match="ppo.num_minibatches=3 must divide the 32 rollouts of a step"):
        load_config(None, ["loss.name=ppo", "ppo.num_minibatches=3"])
    with pytest.raises(ConfigError, match="ppo.kl_coef_unit"):
        load_config(None, ["loss.name=ppo", "ppo.kl_coef_unit=batch"])


def test_critic_starts_as_the_reward_model(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    rm.config.pad_token_id = 0
    with torch.no_grad():
        rm.score.weight.normal_(0.0, 0.5)
    rm.save_pretrained(str(tmp_path / "rm"))
    critic = ValueModel.from_pretrained(tmp_path / "rm")
    ids = torch.tensor([[5, 9, 17, 23, 42, 7]])
    with torch.no_grad():
        values = critic(ids, torch.ones_like(ids))
        # the value of every prefix is the reward model's score of that prefix
        want = [rm(input_ids=ids[:, : t + 1]).logits[0, 0].item() for t in range(ids.shape[1])]
    assert values[0].tolist() == pytest.approx(want, abs=1e-5)
    fresh = ValueModel.from_pretrained(tiny_model_dir)  # a policy dir: small fresh head, not the RM's
    assert fresh.value_head.weight.abs().max() < 0.2

    class SameTokenizer:
        def shares_tokenizer(self, tok):
            return True

    cfg = load_config(None, ["loss.name=ppo", f"rollout.reward_model={tmp_path / 'rm'}"])
    assert critic_source(cfg, SameTokenizer(), None, "policy")[0] == str(tmp_path / "rm")
    cfg.ppo.critic_init = "policy"
    assert critic_source(cfg, SameTokenizer(), None, "policy")[0] == "policy"
    cfg = load_config(None, ["loss.name=ppo", "rollout.reward_fn=reward_fns:cat_fraction"])
    assert critic_source(cfg, None, None, "policy") == (
        "policy",
        "ppo: critic starts from the policy: rollout.reward_fn scores rollouts, no reward model",
    )
