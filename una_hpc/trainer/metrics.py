"""Metrics: metrics.jsonl (one JSON object per logged step), TensorBoard when installed, and a progress bar.

The progress bar shows tokens/s, ETA, loss and implicit reward; metrics.jsonl rows carry at least step, loss and
tokens_per_s (the command-line contract), plus lr, per-type losses, reward statistics and grad norm. A NaN or inf
(a skipped non-finite step, docs/faults.md) is written as null, so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm import tqdm


class MetricsLogger:
    def __init__(
        self,
        output_dir: str | Path,
        total_steps: int,
        start_step: int = 0,
        *,
        enabled: bool = True,
        progress: bool = True,
        tensorboard: bool = True,
    ):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._tb = None
        self._bar = None
        self._t0 = time.perf_counter()
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if start_step == 0 and self.path.exists():
            self.path.unlink()  # a fresh run starts a fresh log
        elif start_step > 0 and self.path.exists():
            self._truncate_after(start_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None
        if progress:
            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, smoothing=0.1)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint (the resumed run logs them again)."""
        rows = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(r + "\n" for r in rows))

    def log(self, step: int, row: dict, tokens: int) -> dict:
        now = time.perf_counter()
        seconds = max(now - self._t0, 1e-9)  # since the previous row: log_every steps (and any eval between)
        row = {"step": step, **row, "tokens": tokens, "step_s": seconds, "tokens_per_s": tokens / seconds}
        self._t0 = now
        if not self.enabled:
            return row
        with self.path.open("a") as f:
            f.write(json.dumps({k: None if _nonfinite(v) else v for k, v in row.items()}) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and not _nonfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            post = {"loss": f"{row['loss']:.4f}", "tok/s": f"{row['tokens_per_s']:.0f}"}
            if "reward_mean" in row:
                post["reward"] = f"{row['reward_mean']:+.3f}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)
        return row

    def close(self) -> None:
        """Idempotent: a run stopped by a fault closes it before raising."""
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def _nonfinite(v) -> bool:
    return isinstance(v, float) and not math.isfinite(v)
