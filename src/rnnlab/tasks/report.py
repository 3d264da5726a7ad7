"""``rnnlab report RUN_DIR... [--out report.html]``: one self-contained page from run folders."""
from __future__ import annotations

from pathlib import Path

from rnnlab.report import build_report


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="build one self-contained report.html from run folders",
                              description="Collect every run folder (with metrics.json) under the given paths "
                                          "into one HTML page: command, versions, metrics tables, training curves, plots.")
    p.add_argument("runs", nargs="+", help="run folders (searched recursively)")
    p.add_argument("--out", default=None, help="output HTML (default <first run folder>/report.html)")
    p.add_argument("--title", default="rnnlab report")
    p.set_defaults(func=_main)


def _main(args) -> int:
    out = Path(args.out) if args.out else Path(args.runs[0]) / "report.html"
    path = build_report([Path(r) for r in args.runs], out, args.title)
    print(f"report: {path}")
    return 0
