"""The embedded default task: what una-hpc trains when no model or data is given, built from nothing on a CPU.

    una-hpc demo configs/quickstart.yaml                    # build (cached) -> offline UNA -> eval, end to end
    .venv/bin/python -m pytest tests/unit/test_synthetic.py tests/integration/test_default_task.py -q

Modules: grammar (the synthetic HelpSteer-style prompts, response generators and the exact gold reward), sft (the
small loop that trains the base model from scratch), build (tokenizer -> SFT'd tiny Llama -> scored dataset, each
step cached under task.dir/seed-<task.seed>; task.seed is the task's own seed, never trainer.seed), validity (only
rows validation accepts are written), reward_model (the task's learned RM for online runs), defaults
(`fill_defaults`: the entry points' one call that builds what an empty config needs and names it in the config),
demo (`una-hpc demo`).

This package sits above the trainer: it uses the loops (generation for its data, the offline loop and eval for the
demo), and the trainer never imports it; the trainer sees the task only as paths and the eval.gold_reward hook
(una_hpc.hooks) that `fill_defaults` wrote into the config. Importing the package itself loads nothing.
"""
