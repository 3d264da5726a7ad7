"""``rnnlab explain <task> --checkpoint CKPT [--input SPEC] --out heatmap.png``: which time steps and
inputs drove a trained model's output (integrated gradients, gradient SHAP or occlusion, via Captum).

Hook protocol: a task module ``rnnlab.tasks.<task>`` supports this command by defining

    explain_inputs(checkpoint: str, input_spec: str | None) -> dict

which loads the checkpoint and prepares one input. Keys of the dict:

* ``x`` (required): float tensor ``(batch, time, features)``; the first sample is drawn.
* ``model`` and/or ``forward``: the ``nn.Module``, or a function ``x -> (batch, outputs)`` to call
  instead (one forecast step, a seq2seq decoder step on embedded source tokens); at least one.
* ``forward_args``: a tuple of further, unattributed inputs: ``forward(x, *forward_args)`` (the
  decoder's target prefix); batch-first tensors are repeated with ``x`` in Captum's batches.
* ``baseline``: ``zeros`` / ``mean`` / ``silence`` / a tensor like ``x`` (default ``zeros``;
  ``--baseline`` overrides it).
* ``target``: the output index to explain (default: the predicted class; ``--target`` overrides it).
* ``step_labels``, ``feature_labels``: tick labels of the time and feature axes.
* ``title``: the heatmap's title; ``inputs``: ``(batch, time[, k])`` raw input drawn under the map.
* ``extra``: ``extra(ax)`` draws a companion panel (e.g. a translation's attention map).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.explain import BASELINES, METHODS, explain
from rnnlab.runs import new_run_dir, write_metrics

HOOK_KEYS = {"x", "model", "forward", "forward_args", "baseline", "target", "step_labels", "feature_labels",
             "title", "inputs", "extra"}


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="attribution heatmap: which steps and inputs drove the output",
                              description=__doc__.split("\n\n")[0],
                              epilog="Example: rnnlab explain forecast --checkpoint runs/forecast/RUN/model.safetensors "
                                     "--method occlusion --out heatmap.png")
    p.add_argument("task", help="the task whose checkpoint this is (toy, forecast, speech, translate, ...)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by the task's training")
    p.add_argument("--input", default=None, help="what to explain (task-specific: a file, a sentence, seed:N, an origin, ...)")
    p.add_argument("--method", default="integrated_gradients", choices=METHODS)
    p.add_argument("--baseline", default=None, choices=BASELINES, help="default: the task's choice")
    p.add_argument("--target", type=int, default=None, help="output index to explain (default: the task's choice)")
    p.add_argument("--steps", type=int, default=64, help="integration steps of integrated gradients (default 64)")
    p.add_argument("--out", default=None, help="heatmap PNG (default <run-dir>/explain.png)")
    p.add_argument("--run-dir", default=None, help="folder for metrics.json (default runs/explain/<task>/<timestamp>)")
    p.add_argument("--seed", type=int, default=0, help="seed of gradient SHAP's random draws")
    p.add_argument("--json", action="store_true", help="print only the metrics as JSON")
    p.set_defaults(func=_main)


def load_hook(task: str):
    """The task's ``explain_inputs`` function, or a clear error."""
    try:
        module = importlib.import_module(f"rnnlab.tasks.{task}")
    except ModuleNotFoundError as exc:
        if exc.name != f"rnnlab.tasks.{task}":
            raise
        raise RnnlabError(f"unknown task {task!r} (expected a module rnnlab.tasks.{task})") from None
    hook = getattr(module, "explain_inputs", None)
    if hook is None:
        raise RnnlabError(f"task {task!r} does not support explain (rnnlab.tasks.{task} has no explain_inputs)")
    return hook


def check_spec(task: str, spec) -> dict:
    """The hook's dict, checked against the protocol so a typo fails here and not in a plot."""
    if not isinstance(spec, dict):
        raise RnnlabError(f"{task}.explain_inputs must return a dict, got {type(spec).__name__}")
    unknown = sorted(set(spec) - HOOK_KEYS)
    if unknown:
        raise RnnlabError(f"{task}.explain_inputs returned unknown keys {unknown}; expected some of {sorted(HOOK_KEYS)}")
    if "x" not in spec or (spec.get("model") is None and spec.get("forward") is None):
        raise RnnlabError(f"{task}.explain_inputs must return 'x' and 'model' or 'forward', got keys {sorted(spec)}")
    return spec


def _main(args) -> int:
    hook = load_hook(args.task)
    if not Path(args.checkpoint).is_file():
        raise RnnlabError(f"checkpoint {args.checkpoint} does not exist")
    spec = check_spec(args.task, hook(args.checkpoint, args.input))
    target = args.target if args.target is not None else spec.get("target")
    result = explain(spec.get("model"), spec["x"][:1], target=target, method=args.method,
                     baseline=args.baseline or spec.get("baseline", "zeros"), forward=spec.get("forward"),
                     n_steps=args.steps, seed=args.seed)
    run_dir = new_run_dir(f"explain/{args.task}", args.run_dir)
    out = Path(args.out) if args.out else run_dir / "explain.png"
    result.plot(out, step_labels=spec.get("step_labels"), feature_labels=spec.get("feature_labels"),
                title=spec.get("title"), inputs=spec.get("inputs"), extra=spec.get("extra"))
    metrics = summary(args.task, result)
    if spec.get("step_labels") is not None:  # e.g. series positions, source tokens
        metrics["top_step_labels"] = [str(spec["step_labels"][i]) for i in metrics["top_steps"]]
    metrics["heatmap"] = str(out)
    write_metrics(run_dir, metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.method}: output {metrics['output']:.4g} (baseline {metrics['baseline_output']:.4g})")
        names = metrics.get("top_step_labels", metrics["top_steps"])
        print("most important steps: " + ", ".join(f"{s} ({v:.0%})" for s, v in zip(names, metrics["top_step_shares"])))
        if "completeness_relative_gap" in metrics:
            print(f"completeness gap: {metrics['completeness_relative_gap']:.2%} of f(x) - f(baseline)")
        print(f"heatmap: {out}")
    return 0


def summary(task: str, result) -> dict:
    """The figures the command reports for the first sample: output, top steps, completeness gap."""
    share = result.step_share()[0]
    top = share.argsort(descending=True)[:5].tolist()
    metrics = {"task": task, "method": result.method, "target": int(result.target[0]),
               "output": float(result.output[0]), "baseline_output": float(result.baseline_output[0]),
               "top_steps": top, "top_step_shares": [float(share[i]) for i in top]}
    rel = result.relative_delta()
    if rel is not None:
        metrics["completeness_relative_gap"] = float(rel[0])
    return metrics
