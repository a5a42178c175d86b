"""oikyo.tune: hyperparameter search over training runs (``oikyo tune``), with Optuna.

A study trains the same base config many times with different knobs, scores each run, and keeps
the best (or, with several objectives, the Pareto front). The modules, bottom up:

    space       which config keys a study varies and over which ranges (a YAML space file, or the
                default LoRA space); turns an Optuna trial into ``--set`` overrides
    folds       k cross-validation folds of a split dataset version (train + validation rows,
                leakage-free, stratified), each an ordinary immutable dataset version
    objectives  what a trial is scored on (validation loss, an evaluation metric, forgetting, ...)
    study       the driver: an Optuna study whose trials are queued training runs, pruned on their
                live metrics, and recorded with the study
    results     reading a study back: best trials, Pareto fronts, tables and plots

Usage::

    from oikyo.tune.space import load_space
    from oikyo.tune.folds import make_folds
    space = load_space("src/oikyo/configs/space-lora.yaml")
    folds = make_folds("support", k=5, seed=0)
"""
