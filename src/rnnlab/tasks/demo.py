"""``rnnlab demo``: the whole toolkit end to end at a small size, ending in ``report.html``.

Runs, each into its own folder under the run folder: one short training per cell on a memory
task (the table of cells and final losses), the gradient-flow figure, then every application's
small demo (forecasting, text generation, translation, speech, motor control) that is part of this
build. A failing part is reported and the others still run; the exit code says whether all passed.
"""
from __future__ import annotations

import importlib
import json
import time
import traceback
from pathlib import Path

from rnnlab.report import build_report
from rnnlab.runs import new_run_dir, print_table, write_metrics

PARTS = ("toy", "gradients", "forecast", "generate", "translate", "speech", "motor")


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run every part at a small size and write report.html",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=None, help="run folder (default runs/demo/<timestamp>)")
    p.add_argument("--only", nargs="*", default=None, choices=PARTS, help="run only these parts")
    p.set_defaults(func=_main)


def run_demo(run_dir: Path, parts=PARTS) -> dict:
    summary = {}
    for name in parts:
        try:
            module = importlib.import_module(f"rnnlab.tasks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rnnlab.tasks.{name}":
                continue
            raise
        if not hasattr(module, "demo"):
            continue
        print(f"\n=== demo: {name} ===", flush=True)
        start = time.perf_counter()
        try:
            metrics = module.demo(run_dir / name)
            summary[name] = {"status": "ok", "seconds": round(time.perf_counter() - start, 1), "metrics": metrics}
        except Exception as exc:  # one broken part must not hide the others' results
            traceback.print_exc()
            summary[name] = {"status": f"failed: {type(exc).__name__}: {exc}", "seconds": round(time.perf_counter() - start, 1)}
    return summary


def _main(args) -> int:
    run_dir = new_run_dir("demo", args.run_dir)
    summary = run_demo(run_dir, tuple(args.only) if args.only else PARTS)
    print("\n=== demo summary ===")
    print_table([{"part": k, "status": v["status"], "seconds": v["seconds"]} for k, v in summary.items()])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    report = build_report([run_dir], run_dir / "report.html", "rnnlab demo")
    print(f"\nreport: {report}")
    from rnnlab.browser import check_page, chromium

    if chromium():
        shot = check_page(report, run_dir / "report-screenshot.png")
        print(f"browser check: images {shot['images']}, console errors {len(shot['console_errors'])}, "
              f"screenshot {shot.get('screenshot')}")
    return 0 if all(v["status"] == "ok" for v in summary.values()) else 1
