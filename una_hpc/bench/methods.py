"""The methods `una-hpc bench replicate` compares: a key, a label, a config in configs/replicate/ and its overrides."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    config: str
    """File in the configs dir (configs/replicate/)."""
    overrides: tuple[str, ...] = ()
    online: bool = False
    models: tuple[str, ...] = ("policy",)
    """Models resident while training (vLLM's copy of the policy not counted)."""


# Offline runs cache the reference log-probs before training (data.ref_cache), so only the policy stays resident;
# KTO keeps its reference for the mismatched KL sequences.
METHODS: tuple[Method, ...] = (
    Method("dpo", "DPO (UNA-pairwise)", "dpo.yaml"),
    Method("kto", "KTO", "kto.yaml", models=("policy", "reference")),
    Method("una_binary_mse", "UNA-binary (MSE)", "una_binary.yaml", ("loss.binary_kind=mse",)),
    Method("una_binary_bce", "UNA-binary (BCE)", "una_binary.yaml", ("loss.binary_kind=bce",)),
    Method("una_score", "UNA-score (MSE)", "una_score.yaml"),
    Method("mixed", "UNA mixed (pairs + binary + scores)", "mixed.yaml"),
    # Controls: the paper gives UNA-score a 6x larger lr than the others; at UNA-score's lr the loss is the only
    # difference left.
    Method("dpo_eqlr", "DPO, UNA-score's lr", "dpo.yaml", ("optim.lr=1e-4",)),
    Method("kto_eqlr", "KTO, UNA-score's lr", "kto.yaml", ("optim.lr=1e-4",), models=("policy", "reference")),
    *(
        Method(
            f"una_binary_{k}_eqlr",
            f"UNA-binary ({k.upper()}), UNA-score's lr",
            "una_binary.yaml",
            (f"loss.binary_kind={k}", "optim.lr=1e-4"),
        )
        for k in ("mse", "bce")
    ),
    Method("una_online", "online UNA", "online_una.yaml", online=True, models=("policy", "reference", "reward model")),
    Method(
        "una_online_rollout",
        "online UNA, log-ratio vs rollout policy (authors' code)",
        "online_una.yaml",
        ("loss.online_logratio=rollout",),
        online=True,
        models=("policy", "reference", "reward model"),
    ),
    Method(
        "ppo", "PPO (RLHF)", "online_ppo.yaml", online=True, models=("policy", "reference", "reward model", "critic")
    ),
)
BY_KEY = {m.key: m for m in METHODS}
EQUAL_TIME_PAIR = ("una_online", "ppo")
