"""``rnnlab explain <task> --checkpoint CKPT [--input SPEC] --out heatmap.png``: which time steps and
inputs drove a trained model's output (integrated gradients, gradient SHAP or occlusion, via Captum).

A task supports it by defining ``explain_inputs(checkpoint, input_spec) -> dict`` with keys
``model`` (or ``forward``), ``x`` (batch, time, features), and optionally ``baseline``, ``target``,
``step_labels``, ``feature_labels``, ``title``, ``inputs`` (a 1-D view of x to draw), ``extra``
(a function drawing a companion panel, e.g. an attention map).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from rnnlab.errors import RnnlabError
from rnnlab.explain import METHODS, explain
from rnnlab.runs import new_run_dir, write_metrics


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="attribution heatmap: which steps and inputs drove the output",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("task", help="the task whose checkpoint this is (toy, forecast, speech, translate, ...)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by the task's training")
    p.add_argument("--input", default=None, help="what to explain (task-specific: a file, a sentence, seed:N, ...)")
    p.add_argument("--method", default="integrated_gradients", choices=METHODS)
    p.add_argument("--baseline", default=None, help="zeros, mean or silence (default: the task's choice)")
    p.add_argument("--out", default=None, help="heatmap PNG (default <run-dir>/explain.png)")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    try:
        module = importlib.import_module(f"rnnlab.tasks.{args.task}")
    except ModuleNotFoundError:
        raise RnnlabError(f"unknown task {args.task!r}") from None
    if not hasattr(module, "explain_inputs"):
        raise RnnlabError(f"task {args.task!r} does not support explain (no explain_inputs)")
    if not Path(args.checkpoint).is_file():
        raise RnnlabError(f"checkpoint {args.checkpoint} does not exist")
    spec = module.explain_inputs(args.checkpoint, args.input)
    result = explain(spec.get("model"), spec["x"], target=spec.get("target"), method=args.method,
                     baseline=args.baseline or spec.get("baseline", "zeros"), forward=spec.get("forward"))
    run_dir = new_run_dir(f"explain/{args.task}", args.run_dir)
    out = Path(args.out) if args.out else run_dir / "explain.png"
    result.plot(out, step_labels=spec.get("step_labels"), feature_labels=spec.get("feature_labels"),
                title=spec.get("title"), inputs=spec.get("inputs"), extra=spec.get("extra"))
    share = result.step_share()[0]
    top = share.argsort(descending=True)[:5].tolist()
    metrics = {"task": args.task, "method": args.method, "target": int(result.target[0]),
               "output": float(result.output[0]), "baseline_output": float(result.baseline_output[0]),
               "top_steps": top, "top_step_shares": [float(share[i]) for i in top], "heatmap": str(out)}
    rel = result.relative_delta()
    if rel is not None:
        metrics["completeness_relative_gap"] = float(rel[0])
    write_metrics(run_dir, metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.method}: output {metrics['output']:.4g} (baseline {metrics['baseline_output']:.4g})")
        print("most important steps: " + ", ".join(f"{s} ({v:.0%})" for s, v in zip(top, metrics["top_step_shares"])))
        if rel is not None:
            print(f"completeness gap: {float(rel[0]):.2%} of f(x) - f(baseline)")
        print(f"heatmap: {out}")
    return 0
