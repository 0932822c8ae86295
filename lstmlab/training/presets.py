"""Defaults that depend on the names a user picks: the task preset (what ``train TASK`` means
with no other option) and the optimizer preset (seed 000's batch sizes and step settings).

They sit between the ``RunConfig`` dataclass defaults and the user's config files and flags:
defaults → task preset → optimizer preset → files → ``--key value`` flags.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TASK_PRESETS", "OPTIMIZER_PRESETS", "SEED000_TASK"]

# Lyu & Zhu (seed 000) Sec. 5: 1997 multiplication, minimal length 100, 10,000 training and
# 3,000 test sequences, sigmoid output unit, stop at test mean absolute error < 0.01.
SEED000_TASK: dict[str, Any] = {
    "convention": "1997",
    "T": 100,
    "n_train": 10_000,
    "n_test": 3_000,
    "output": "sigmoid",
    "rule": "seed000",
}

TASK_PRESETS: dict[str, dict[str, Any]] = {
    "multiplication": {
        "task": {"options": SEED000_TASK},
        # seed 000's MATLAB code (netInit.m): input-gate bias -1, weights U[-0.1, 0.1]
        "model": {"options": {"gate_bias": {"i": -1.0}}},
        # a budget so that a run that does not solve still ends (~minutes on 2 cores)
        "stop": {"max_epochs": 100},
    },
    "adding": {"task": {"options": {"convention": "1997"}}, "stop": {"max_epochs": 100}},
}

# seed 000 Sec. 5: (mini-)batch 1,000 for the batch optimizers, 100 for momentum GD with
# learning rate 0.1 and momentum 0.9; its code runs minFunc for 20 iterations per minibatch.
# HF as seed 000 ran it: finite-difference Hessian-vector products, L-BFGS preconditioner.
OPTIMIZER_PRESETS: dict[str, dict[str, Any]] = {
    # minFunc is called afresh on each minibatch, so the L-BFGS history restarts with it, and
    # minFunc keeps Corr = 100 pairs by default (its docstring). Both matter: with history 10,
    # or with the history kept across minibatches, some seeds plateau (docs/results.md).
    "lbfgs": {
        "batch_size": 1000,
        "iterations_per_batch": 20,
        "history": 100,
        "options": {"keep_history": False},
    },
    # minFunc's CG, called afresh per minibatch: Hestenes–Stiefel, Wolfe c2 = 0.2, first trial
    # step from the quadratic through the last two losses (its LS_init = 2), steepest descent
    # at the start of each minibatch. With PR+, c2 = 0.1 and the direction kept across
    # minibatches, seeds 0 and 1 did not solve within 400 s (docs/results.md).
    "cg": {
        "batch_size": 1000,
        "iterations_per_batch": 20,
        "options": {"beta": "hs", "c2": 0.2, "step_init": "quadratic", "keep_history": False},
    },
    "hf": {"batch_size": 1000, "options": {"curvature": "fd", "preconditioner": "lbfgs"}},
    "momentum": {"batch_size": 100, "lr": 0.1, "momentum": 0.9},
    "nesterov": {"batch_size": 100, "lr": 0.1, "momentum": 0.9},
    "sgd": {"batch_size": 1, "lr": 0.1},
    "adam": {"batch_size": 100, "lr": 1e-3},
}
