"""Command line: `una-hpc train|eval|demo|train-rm|data check`.

    una-hpc data check data.jsonl --format pairwise
    una-hpc train configs/quickstart.yaml loss.beta=0.1 trainer.max_steps=20
    una-hpc eval  configs/quickstart.yaml
    una-hpc demo  configs/quickstart.yaml

Bad configuration or data is reported as one line per problem on stderr with exit code 1, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config

from .data.formats import FORMATS


def _train(args) -> int:
    from .trainer import run_training

    final = run_training(load_config(args.config, args.overrides))
    if final is not None:
        print(f"final model: {final}")
    return 0


def _eval(args) -> int:
    from .trainer.eval_run import run_eval

    run_eval(load_config(args.config, args.overrides))
    return 0


def _demo(args) -> int:
    from .trainer.demo import run_demo

    run_demo(load_config(args.config, args.overrides))
    return 0


def _train_rm(args) -> int:
    from .rollout.reward_train import train_rm_from_config

    print(f"reward model: {train_rm_from_config(load_config(args.config, args.overrides))}")
    return 0


def _data_check(args) -> int:
    from .data.check import run_data_check

    return run_data_check(args.file, args.format)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="una-hpc", description="UNA alignment training backend")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("train", _train, "train (offline UNA, online UNA or PPO, by loss.name)"),
                            ("eval", _eval, "gold/RM reward, win rate and KL of a trained model"),
                            ("demo", _demo, "embedded default end to end: SFT -> data -> UNA -> eval"),
                            ("train-rm", _train_rm, "train a reward model (AutoModelForSequenceClassification)")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="YAML config")
        sp.add_argument("overrides", nargs="*", help="key.sub=value")
        sp.set_defaults(fn=fn)
    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="validate a dataset file; one line per problem")
    check.add_argument("file")
    check.add_argument("--format", required=True, choices=sorted(FORMATS))
    check.set_defaults(fn=_data_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file load/save bars would break our own progress line
    from .data.io import DataError
    from .rollout.base import EngineStartError, VLLMNotInstalledError, WeightSyncError

    try:
        return args.fn(args)
    except (ConfigError, EngineStartError, VLLMNotInstalledError, WeightSyncError) as e:
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
