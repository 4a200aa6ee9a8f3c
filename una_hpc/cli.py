"""Command line: `una-hpc train|eval|demo|train-rm|config|data check|bench replicate`.

    una-hpc data check data.jsonl --format pairwise
    una-hpc train configs/quickstart.yaml loss.beta=0.1 trainer.max_steps=20
    una-hpc eval  configs/quickstart.yaml
    una-hpc demo  configs/quickstart.yaml
    una-hpc config [configs/quickstart.yaml] [key.sub=value ...]   # every key: type, value, default, doc
    una-hpc bench replicate [--quick]                               # the paper's comparison (una_hpc/bench)

Bad configuration or data is reported as one line per problem on stderr with exit code 1, never a traceback; a
config key without effect in the run is one `warning:` line (una_hpc/config.py). `run_train` and `run_evaluate`
are what `train` and `eval` run on a loaded config; the Python API (una_hpc.train / una_hpc.evaluate) calls them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .config import Config, ConfigError, ConfigWarning, config_errors, config_warnings, load_config
from .data.formats import FORMAT_NAMES


def run_train(cfg: Config) -> Path:
    """What `una-hpc train` runs on a loaded, validated config (una_hpc.train too): the embedded task's defaults
    filled in (una_hpc.task.defaults, in place), then the loop loss.name picks."""
    from .task.defaults import fill_defaults
    from .trainer import run_training

    return run_training(fill_defaults(cfg))


def run_evaluate(cfg: Config) -> dict:
    """What `una-hpc eval` runs on a loaded, validated config (una_hpc.evaluate too): the task's defaults filled
    in (no reward model: eval reads none), then the evaluation; the eval.json dict."""
    from .task.defaults import fill_defaults
    from .trainer.eval_run import run_eval

    return run_eval(fill_defaults(cfg, reward_model=False))


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _print_warnings(lines: list[str]) -> None:
    if _is_main_process():  # under a launcher every rank parses the same config: say it once
        for line in lines:
            print(f"warning: {line}", file=sys.stderr)


def _load(args) -> Config:
    """load_config; its ConfigWarnings become `warning:` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        cfg = load_config(args.config, args.overrides)
    _print_warnings([str(w.message) for w in caught if issubclass(w.category, ConfigWarning)])
    for w in caught:
        if not issubclass(w.category, ConfigWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return cfg


def _train(args) -> int:
    final = run_train(_load(args))
    if final is not None:
        print(f"final model: {final}")
    return 0


def _eval(args) -> int:
    run_evaluate(_load(args))
    return 0


def _demo(args) -> int:
    from .task.demo import run_demo

    run_demo(_load(args))
    return 0


def _train_rm(args) -> int:
    from .rollout.reward_train import train_rm_from_config
    from .task.defaults import fill_defaults

    # reward_model=False: rollout.reward_model is where train-rm writes, never a model to build
    print(f"reward model: {train_rm_from_config(fill_defaults(_load(args), reward_model=False))}")
    return 0


def _config(args) -> int:
    """Print every key (type, value, default, doc), then the config's problems: a config checker too."""
    from .config import describe

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not Path(path).is_file():  # `una-hpc config loss.name=dpo`
        path, overrides = None, [path, *overrides]
    cfg = load_config(path, overrides, validate=False)  # unknown keys / bad values: ConfigError, as everywhere
    print(describe(cfg), end="")
    _print_warnings(config_warnings(cfg))
    errors = config_errors(cfg)
    if errors:
        raise ConfigError(errors)
    return 0


def _data_check(args) -> int:
    from .config import DataConfig
    from .data.check import run_data_check

    return run_data_check(args.file, args.format, data_cfg=DataConfig(split=args.split))


def _bench_replicate(args) -> int:
    from .bench.replicate import RunFailed
    from .bench.replicate import main as replicate

    try:
        return replicate(args)
    except RunFailed as e:  # a method's run failed: which one, its log, and the log's last line
        print(f"error: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    from .bench.replicate import add_arguments as replicate_arguments

    p = argparse.ArgumentParser(prog="una-hpc", description="UNA alignment training backend")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("train", _train, "train (offline UNA, online UNA or PPO, by loss.name)"),
        ("eval", _eval, "gold/RM reward, win rate and KL of a trained model"),
        ("demo", _demo, "embedded default end to end: SFT -> data -> UNA -> eval"),
        ("train-rm", _train_rm, "train a reward model (AutoModelForSequenceClassification)"),
    ):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="YAML config")
        sp.add_argument("overrides", nargs="*", help="key.sub=value")
        sp.set_defaults(fn=fn)
    cp = sub.add_parser(
        "config", help="every config key: type, value (default, or this config's), doc; then the config's problems"
    )
    cp.add_argument("config", nargs="?", default=None, help="YAML config (optional)")
    cp.add_argument("overrides", nargs="*", help="key.sub=value")
    cp.set_defaults(fn=_config)
    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="validate a dataset file; one line per problem")
    check.add_argument("file")
    check.add_argument("--format", default="auto", choices=FORMAT_NAMES, help="auto: detect the TRL dataset type")
    check.add_argument("--split", default="train", help="split of a dataset dir (e.g. train_prefs)")
    check.set_defaults(fn=_data_check)
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    rep = bench.add_parser("replicate", help="the paper's comparison: every method, several seeds, one report")
    replicate_arguments(rep)
    rep.set_defaults(fn=_bench_replicate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fn is _config:  # no model, data or engine: none of the imports below
        try:
            return _config(args)
        except ConfigError as e:
            for problem in e.problems:
                print(f"error: {problem}", file=sys.stderr)
            return 1
    from transformers.utils import logging as hf_logging

    from .host_memory import fix_malloc_thresholds

    fix_malloc_thresholds()  # fast heap reuse without RSS ratcheting on CPU (see host_memory)
    hf_logging.disable_progress_bar()  # per-file load/save bars would break our own progress line
    # DeepSpeed 0.19 calls torch.distributed collectives that torch 2.13 deprecates: one FutureWarning per rank and
    # collective in every ZeRO run, about code the user does not own and cannot change.
    warnings.filterwarnings(
        "ignore", r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated", FutureWarning
    )
    from .data.io import DataError
    from .rollout.base import EngineStartError, VLLMNotInstalledError, WeightSyncError

    try:
        return args.fn(args)
    except ConfigError as e:  # every problem of the config at once, one line each
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
    except (EngineStartError, VLLMNotInstalledError, WeightSyncError) as e:
        print(f"error: {e}", file=sys.stderr)
    except DataError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        print(f"{len(e.problems)} data problem(s); nothing was trained", file=sys.stderr)
    except (FileNotFoundError, ValueError) as e:  # bad paths or values met past config parsing: still one line
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; resume with trainer.resume=true", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
