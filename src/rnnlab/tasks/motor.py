"""``rnnlab motor``: the motor-control side of rnnlab.

This build has ``rnnlab motor decode``: LSTM and GRU decoders of hand velocity from real monkey
motor-cortex spike counts (Dyer et al. 2017, subject C), against a ridge Wiener filter and a Kalman
filter, scored by R2 on the held-out test split. The arm, the reaching task and the trained
rate-network model (``motor train`` / ``analyze``) are still to come.
"""
from __future__ import annotations

import json

from rnnlab.runs import new_run_dir, print_table, write_config, write_metrics


def register(subparsers) -> None:
    p = subparsers.add_parser("motor", help="motor cortex: decode hand velocity from real recordings",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="motor_command", metavar="SUBCOMMAND", required=True)
    d = sub.add_parser("decode", help="LSTM/GRU vs Wiener and Kalman decoders, R2 on subject C's test split")
    d.add_argument("--data", default=None, help="folder (or .mat file) of the recordings (default ../shared/data/motor-cortex)")
    d.add_argument("--subject", default="C", help="C (chewie_demo.mat) or M (mihi_demo.mat)")
    d.add_argument("--run-dir", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_decode)


def _decode(args) -> int:
    from dataclasses import replace

    from rnnlab.brain.decode import DecodeConfig, decode, plot_decoding
    from rnnlab.brain.recordings import default_data_dir, load_recording

    recording = load_recording(args.data or default_data_dir(), args.subject)
    config = replace(DecodeConfig(), seed=args.seed)
    result = decode(recording, config)
    run_dir = new_run_dir("motor/decode", args.run_dir)
    write_config(run_dir, config)
    write_metrics(run_dir, {"subject": args.subject, "r2": result["r2"]})
    plot_decoding(result, run_dir / "decoding.png")
    if args.json:
        print(json.dumps({"r2": result["r2"]}))
    else:
        print_table([{"decoder": k, "r2": v} for k, v in result["r2"].items()])
        print(f"plot: {run_dir / 'decoding.png'}")
    return 0
