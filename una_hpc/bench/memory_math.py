"""Per-rank training memory as arithmetic: model states under ZeRO stages and tensor parallelism, frozen copies,
activations. benchmarks/memory_model.py prints its tables and checks it against measurement (2 ranks, CPU);
una-hpc bench replicate states online UNA's and PPO's memory at 7B with it.

Model states (validated by `benchmarks/memory_model.py check`): weights w*P (ZeRO-3: /dp), gradients w*P_t (ZeRO-2/3:
/dp), DeepSpeed's fp32 master partition 4*P_t/dp (ZeRO >= 1; also fp32 runs), Adam moments 8*P_t (ZeRO >= 1: /dp),
communication buckets (hidden^2 elements, as una_hpc.parallel.ds_config sizes them). Tensor parallelism divides
everything but the input embedding by tp. Activations (an estimate): with gradient checkpointing one bf16 hidden
state per layer plus one layer's working set (~34*b*S*H bytes / tp, flash attention), plus the logits: the fused
seq_logps kernel keeps one [tile, V] tile; a PPO/HF path holds [b*S, V] fp32 log-probs and their gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int
    kv_heads: int

    @property
    def embed(self) -> int:
        return self.vocab * self.hidden

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of every linear in one decoder layer."""
        kv = self.kv_heads * (self.hidden // self.heads)
        h, i = self.hidden, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def params(self) -> int:
        per_layer = sum(a * b for a, b in self.linears()) + 2 * self.hidden
        return self.layers * per_layer + 2 * self.embed + self.hidden

    def lora_params(self, rank: int) -> int:
        return self.layers * sum(rank * (a + b) for a, b in self.linears())


MISTRAL_7B = Shape("Mistral-7B", 4096, 32, 32000, 14336, 32, 8)
LLAMA_70B = Shape("Llama-2-70B", 8192, 80, 32000, 28672, 64, 8)


@dataclass(frozen=True)
class Setup:
    method: str = "una_offline"
    """una_offline (reference logps cached), una_online (reference + reward model), ppo (+ critic)."""
    lora_rank: int = 0
    zero: int = 3
    tp: int = 1
    dp: int = 8
    weight_bytes: int = 2
    """2 = bf16 weights and grads (fp32 master in the optimizer), 4 = fp32."""
    micro_batch: int = 4
    seq_len: int = 1024


def tp_split(shape: Shape, n: int, tp: int) -> float:
    """Parameters per TP rank: everything but the input embedding is sharded."""
    return (n - shape.embed) / tp + shape.embed if tp > 1 else n


def model_states(shape: Shape, s: Setup, trainable: int | None = None, total: int | None = None) -> dict:
    """Bytes per rank of one trained model's weights, gradients, optimizer state and buckets."""
    P = tp_split(shape, total if total is not None else shape.params, s.tp)
    full_ft = s.lora_rank == 0
    Pt = (
        tp_split(shape, trainable, s.tp)
        if trainable is not None
        else (P if full_ft else shape.lora_params(s.lora_rank) / s.tp)
    )
    w, d = s.weight_bytes, s.dp
    out = {
        "weights": w * P / (d if s.zero == 3 else 1),
        "grads": w * Pt / (d if s.zero >= 2 else 1),
        "adam": 8 * Pt / (d if s.zero >= 1 else 1),
    }
    if s.zero >= 1:
        out["master_fp32"] = 4 * Pt / d
    elif w == 2:
        out["master_fp32"] = 4 * Pt
    if s.zero >= 1:  # reduce bucket (+ ZeRO-3 prefetch bucket) of hidden^2 elements
        out["buckets"] = w * shape.hidden**2 * (1.9 if s.zero == 3 else 1.0)
    return out


def frozen(shape: Shape, s: Setup) -> float:
    """A frozen copy (reference or reward model) sharded like the policy's weights."""
    return s.weight_bytes * tp_split(shape, shape.params, s.tp) / (s.dp if s.zero == 3 else 1)


def activations(shape: Shape, s: Setup, fused_logits: bool) -> dict:
    tokens = s.micro_batch * s.seq_len
    act = {"checkpoints": 2 * tokens * shape.hidden * shape.layers, "layer": 34 * tokens * shape.hidden / s.tp}
    v = shape.vocab / s.tp
    act["logits"] = 8 * 2048 * v if fused_logits else 2 * 4 * tokens * v  # one tile vs log-probs + grad (fp32)
    return act


def per_rank(shape: Shape, s: Setup) -> dict:
    parts = {f"policy_{k}": v for k, v in model_states(shape, s).items()}
    full = s.lora_rank == 0
    if s.method in ("una_online", "ppo"):
        parts["reward_model"] = frozen(shape, s)
        if full:  # LoRA: the reference is the policy with the adapter off
            parts["reference"] = frozen(shape, s)
    if s.method == "ppo":  # the critic: same backbone and the same LoRA setting as the policy
        parts.update({f"critic_{k}": v for k, v in model_states(shape, s).items()})
    act = activations(shape, s, fused_logits=s.method != "ppo")
    parts.update({f"act_{k}": v for k, v in act.items()})
    if s.method == "ppo":
        parts["act_critic"] = act["checkpoints"] + act["layer"]
    parts["total"] = sum(parts.values())
    return parts
