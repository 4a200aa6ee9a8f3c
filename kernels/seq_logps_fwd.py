"""Forward Triton kernel of `seq_logps`: per-token log-sum-exp and label logit, policy and reference in one pass.

Program (token tile, vocab split) streams the split's W tiles, applies the head's transform to each logits tile, keeps
an online max / sum-exp / label logit per token for policy and reference, and writes per-split partials [splits, T];
the host combines them in a fixed order (deterministic). When `ref_weight is weight` each W tile is loaded once.

Launch order is grouped: GROUP_T consecutive token tiles run against all vocab splits before the next group starts,
so the programs resident at one time share a few hidden blocks and a few W ranges. At T = 16k, V = 128k, H = 4096,
128-row tiles: 8 token tiles x 32 splits resident read 8 MiB of hidden and 32 W tiles per step (both fit a 50 MiB
L2) instead of every program re-reading its own 1 MiB hidden block from HBM for each vocab tile.

Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps_triton.py -q
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_tiles import (
    INTERPRETER_BLOCKS,
    Launch,
    head,
    head_args,
    interpreting,
    kernel_args,
    load_tile,
    online_update,
)

GROUP_T = 8


@triton.jit
def _fwd_kernel(
    Hp,
    Wp,
    Bp,
    RHp,
    RWp,
    RBp,
    LAB,
    M,
    S,
    Z,
    RM,
    RS,
    RZ,
    T,
    V,
    D,
    s_ht,
    s_hd,
    s_wv,
    s_wd,
    s_rht,
    s_rhd,
    s_rwv,
    s_rwd,
    ignore_index,
    mul,
    cap,
    SPLITS,
    GROUP: tl.constexpr,
    HAS_REF: tl.constexpr,
    SHARED_H: tl.constexpr,
    SHARED_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SCALED: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # Grouped order: pid -> (token tile, split) with GROUP token tiles per group, splits fastest inside a group.
    pid = tl.program_id(0)
    n_t = tl.cdiv(T, BLOCK_T)
    first_t = (pid // (GROUP * SPLITS)) * GROUP
    group_size = tl.minimum(n_t - first_t, GROUP)
    pid_t = first_t + (pid % (GROUP * SPLITS)) % group_size
    pid_s = (pid % (GROUP * SPLITS)) // group_size
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = offs_t < T
    labels = tl.load(LAB + offs_t, mask=t_mask, other=ignore_index)
    # A token block with only ignored tokens (prompt, padding) needs nothing: empty vocab loop.
    active = tl.sum(((labels != ignore_index) & t_mask).to(tl.int32), axis=0) > 0
    tiles_per_split = tl.cdiv(tl.cdiv(V, BLOCK_V), SPLITS)
    v_begin = pid_s * tiles_per_split * BLOCK_V
    v_stop = tl.minimum(v_begin + tiles_per_split * BLOCK_V, V)
    v_stop = tl.where(active, v_stop, v_begin)

    m = tl.full([BLOCK_T], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_T], tl.float32)
    z = tl.zeros([BLOCK_T], tl.float32)
    rm = tl.full([BLOCK_T], float("-inf"), tl.float32)
    rs = tl.zeros([BLOCK_T], tl.float32)
    rz = tl.zeros([BLOCK_T], tl.float32)
    for v0 in tl.range(v_begin, v_stop, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        v_mask = offs_v < v_stop
        acc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
        racc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
        for d0 in tl.range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_mask = offs_d < D
            h = load_tile(Hp, offs_t, offs_d, s_ht, s_hd, t_mask, d_mask, UPCAST)
            w = load_tile(Wp, offs_v, offs_d, s_wv, s_wd, v_mask, d_mask, UPCAST)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=PREC)
            if HAS_REF:
                if SHARED_H:
                    rh = h
                else:
                    rh = load_tile(RHp, offs_t, offs_d, s_rht, s_rhd, t_mask, d_mask, UPCAST)
                if SHARED_W:  # LoRA with the adapter off: the W tile is loaded once for both models
                    rw = w
                else:
                    rw = load_tile(RWp, offs_v, offs_d, s_rwv, s_rwd, v_mask, d_mask, UPCAST)
                racc = tl.dot(rh, tl.trans(rw), racc, input_precision=PREC)
        # The transform runs before the masking, so padded columns end at -inf whatever the bias or cap.
        acc = head(acc, Bp, offs_v, v_mask, mul, cap, HAS_BIAS, SCALED, HAS_SOFTCAP)
        acc = tl.where(v_mask[None, :], acc, float("-inf"))
        m, s, z = online_update(acc, offs_v, labels, m, s, z)
        if HAS_REF:
            racc = head(racc, RBp, offs_v, v_mask, mul, cap, HAS_BIAS, SCALED, HAS_SOFTCAP)
            racc = tl.where(v_mask[None, :], racc, float("-inf"))
            rm, rs, rz = online_update(racc, offs_v, labels, rm, rs, rz)

    out = pid_s * T + offs_t
    tl.store(M + out, m, mask=t_mask)
    tl.store(S + out, s, mask=t_mask)
    tl.store(Z + out, z, mask=t_mask)
    if HAS_REF:
        tl.store(RM + out, rm, mask=t_mask)
        tl.store(RS + out, rs, mask=t_mask)
        tl.store(RZ + out, rz, mask=t_mask)


def gpu_config(has_ref: bool) -> dict:
    """sm_90 blocks. Two fp32 128x128 accumulators are 128 registers a thread at 8 warps, and spilled 20-64 bytes
    (ptxas, shared W, plain and softcapped heads): with a reference the token tiles are 64 rows (182 registers, no
    spills; tests/unit/test_seq_logps_compile.py checks every variant)."""
    bt = 64 if has_ref else 128
    return {"BLOCK_T": bt, "BLOCK_V": 128, "BLOCK_D": 64, "num_warps": 8, "num_stages": 3}


def default_splits(T: int, V: int, block_t: int, device: torch.device) -> int:
    """Vocab splits: >= 2 programs per SM, and up to 32 splits of >= 4096 columns so a group of GROUP_T token tiles
    meets many W ranges at once (more splits only add [splits, T] partials, 12 bytes a token each)."""
    if device.type != "cuda":
        return 1 if interpreting() else max(1, min(32, V // 4096))
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count
    n_t = triton.cdiv(T, block_t)
    return max(1, min(max(32, triton.cdiv(2 * n_sm, n_t)), V // 4096))


def forward_launch(
    hidden, weight, bias, labels, ref_hidden, ref_weight, ref_bias, scale, softcap, ignore_index, num_splits
) -> tuple[Launch, torch.Tensor]:
    """The forward launch and its partials buffer [3 or 6, splits, T] (m, s, z; then the reference's)."""
    T, D = hidden.shape
    V = weight.shape[0]
    has_ref = ref_hidden is not None
    rh = ref_hidden if has_ref else hidden
    rw = ref_weight if has_ref else weight
    if interpreting():
        cfg = dict(INTERPRETER_BLOCKS)
    else:
        cfg = gpu_config(has_ref)
    splits = num_splits or default_splits(T, V, cfg["BLOCK_T"], hidden.device)
    parts = torch.empty((6 if has_ref else 3, splits, T), dtype=torch.float32, device=hidden.device)
    b = weight if bias is None else bias.contiguous()  # an unused pointer without a bias
    rb = b if ref_bias is None or ref_bias is bias else ref_bias.contiguous()
    mul, cap, head_flags = head_args(bias, scale, softcap)
    args = (
        hidden,
        weight,
        b,
        rh,
        rw,
        rb,
        labels,
        *parts[:3],
        *(parts[3:] if has_ref else parts[:3]),
        T,
        V,
        D,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        rh.stride(0),
        rh.stride(1),
        rw.stride(0),
        rw.stride(1),
        ignore_index,
        mul,
        cap,
        splits,
    )
    kwargs = dict(
        GROUP=GROUP_T,
        HAS_REF=has_ref,
        SHARED_H=rh is hidden,
        SHARED_W=rw is weight,
        **head_flags,
        **kernel_args(hidden.dtype),
        **cfg,
    )
    grid = (triton.cdiv(T, cfg["BLOCK_T"]) * splits,)
    return Launch(_fwd_kernel, grid, args, kwargs), parts


def forward(hidden, weight, bias, labels, ref_hidden, ref_weight, ref_bias, scale, softcap, ignore_index, num_splits):
    """Per-token (lse, label_logit, ref_lse, ref_label_logit), fp32; ref entries None without a reference.

    ref_bias is the reference's own bias; the kernel reads both biases when bias is given (the public API resolves
    them so that either both or neither are None).
    """
    launch, parts = forward_launch(
        hidden, weight, bias, labels, ref_hidden, ref_weight, ref_bias, scale, softcap, ignore_index, num_splits
    )
    launch()

    def combine(m, s, z):  # log-sum-exp over the vocab splits, in a fixed order
        m_max = m.amax(dim=0)
        return m_max + torch.log((s * torch.exp(m - m_max)).sum(dim=0)), z.sum(dim=0)

    lse, z = combine(*parts[:3])
    if ref_hidden is None:
        return lse, z, None, None
    return (lse, z, *combine(*parts[3:]))
