"""``rnnlab motor``: a recurrent network as a model of motor cortex, driving an arm, against real recordings.

* ``train``: a continuous-time rate network (:class:`rnnlab.CTRNNCell`, optionally with Dale's law)
  drives a six-muscle two-joint arm (:mod:`rnnlab.brain.arm`) in a delayed centre-out reaching task
  (:mod:`rnnlab.brain.reaching`), trained by backpropagation through the arm with the one
  :class:`~rnnlab.train.Trainer`; scored by the endpoint error on held-out noisy reaches to the 8
  targets, then analysed (:mod:`rnnlab.brain.analysis`: hand paths, speed profiles, PCA, jPCA,
  fixed points, directional tuning, a GIF) and compared with real motor cortex
  (:mod:`rnnlab.brain.compare`);
* ``analyze --checkpoint CKPT``: the same analysis of a trained checkpoint;
* ``decode``: LSTM and GRU decoders of hand velocity from real monkey motor-cortex spike counts
  (Dyer et al. 2017, subject C), against a ridge Wiener filter and a Kalman filter;
* ``bench``: MotorNet's GRU policy (Codol et al. 2024) trained on the same reaching task, same
  network size: wall time per 1000 batches and final error against rnnlab's.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnlab.errors import RnnlabError
from rnnlab.runs import new_run_dir, print_table, write_config, write_metrics


@dataclass
class Config:
    hidden: int = 100               # rate units
    tau_ms: float = 50.0            # unit time constant (dt = 10 ms: alpha = 0.2)
    activation: str = "tanh"
    noise_std: float = 0.05         # private noise of each unit (sigma of the CTRNN equation)
    dale: bool = False              # Dale's law: 80% excitatory units, each unit's outgoing weights one sign
    dale_ratio: float = 0.8
    batch_size: int = 32
    batches: int = 2000             # training batches (cosine-decayed learning rate over them)
    batches_per_epoch: int = 100
    learning_rate: float = 3e-3
    clipnorm: float = 1.0
    effort: float = 1e-2            # loss weight of the mean squared muscle excitation
    activity: float = 1e-3          # loss weight of the mean squared firing rate
    curl: float = 0.0               # curl force field (N s/m) during training and evaluation; 0 = none
    max_minutes: float = 25.0       # training stops after this (the evaluation still runs)
    eval_repeats: int = 16          # held-out noisy reaches per target
    compare: bool = True            # compare with the real recordings (skipped if they are missing)
    gif: bool = True
    seed: int = 0


DRY_RUN = {"hidden": 16, "batch_size": 8, "batches": 2, "batches_per_epoch": 1, "eval_repeats": 2, "gif": False}


def build_model(config: Config):
    from rnnlab.brain.arm import ArmParams
    from rnnlab.brain.reaching import ReachNet, TaskSpec

    if config.hidden < 1:
        raise RnnlabError(f"--hidden must be >= 1, got {config.hidden}")
    return ReachNet(hidden=config.hidden, dt=0.01, tau=config.tau_ms / 1000.0, activation=config.activation,
                    noise_std=config.noise_std, dale_ratio=config.dale_ratio if config.dale else None,
                    spec=TaskSpec(curl=config.curl), arm=ArmParams(dt=0.01))


def train(config: Config, run_dir: Path, verbose: int = 1, resume: bool = False) -> dict:
    """Train by backpropagation through the arm, then evaluate, analyse and compare."""
    from rnnlab.brain.reaching import LossWeights, ReachBatches, reach_loss
    from rnnlab.train import CosineDecay, TimeLimit, Trainer, seed_everything

    seed_everything(config.seed)
    model = build_model(config)
    weights = LossWeights(effort=config.effort, activity=config.activity)
    data = ReachBatches(model.spec, config.batch_size, config.batches_per_epoch, config.seed)
    epochs = max(1, -(-config.batches // config.batches_per_epoch))
    limit = TimeLimit(config.max_minutes)
    decay = CosineDecay(config.learning_rate, epochs * config.batches_per_epoch, config.batches_per_epoch)
    trainer = Trainer(model, lambda pred, desired: reach_loss(pred, desired, weights), learning_rate=config.learning_rate,
                      clipnorm=config.clipnorm, callbacks=[decay, limit], seed=config.seed, run_dir=run_dir,
                      config={"task": dataclasses.asdict(config)})
    start = time.perf_counter()
    history = trainer.fit(data, epochs=epochs, verbose=verbose, resume=resume)
    train_s = time.perf_counter() - start
    metrics = {"train_s": train_s, "batches": limit.batches, "s_per_1000_batches": 1000 * train_s / max(limit.batches, 1),
               "stopped_by_time_limit": limit.stopped_early, "final_loss": history.history["loss"][-1]}
    metrics.update(analyze(model, config, run_dir))
    metrics["checkpoint"] = str(run_dir / "checkpoints" / "last.safetensors")  # the trained weights (the trainer
    # writes last.safetensors at the end of every epoch, including one cut short by the time limit)
    return metrics


def analyze(model, config: Config, run_dir: Path) -> dict:
    """Held-out evaluation, dynamics analysis (PNG each) and the comparison with real motor cortex."""
    from rnnlab.brain import analysis
    from rnnlab.brain.reaching import held_out_trials, rollout
    from rnnlab.metrics.motor import endpoint_error_cm, single_peaked_fraction

    trials = held_out_trials(model.spec, config.eval_repeats)
    noisy = rollout(model, trials, noise=True, seed=config.seed + 1)
    end = noisy["hand"][:, -1]
    per_target = [endpoint_error_cm(end[trials["target_index"] == k], trials["target"][trials["target_index"] == k])
                  for k in range(model.spec.n_targets)]
    speed_seg = analysis.movement_speed(noisy, trials)
    metrics = {"endpoint_error_cm": endpoint_error_cm(end, trials["target"]),
               "endpoint_error_cm_worst_target": max(per_target),
               "single_peaked_fraction": single_peaked_fraction(speed_seg)}
    clean = rollout(model, trials, noise=False, seed=config.seed + 2)
    analysis.plot_hand_paths(noisy, trials, model.spec, run_dir / "hand_paths.png")
    analysis.plot_speed_profiles(noisy, trials, run_dir / "speed_profiles.png")
    aligned = analysis.condition_average(clean["rates"], trials, -10, 40)   # (8, 50, H) around the go cue
    pca = analysis.pca(aligned)
    analysis.plot_pca(pca, run_dir / "pca.png")
    movement = analysis.condition_average(clean["rates"], trials, 0, 30)    # go .. go + 300 ms
    jp = analysis.jpca(movement)
    shuffled = analysis.jpca_shuffled(movement, seed=config.seed)
    analysis.plot_jpca(jp, run_dir / "jpca.png")
    metrics.update({"jpca_r2_skew": jp["r2_skew"], "jpca_r2_full": jp["r2_full"],
                    "jpca_skew_over_full": jp["r2_skew"] / max(jp["r2_full"], 1e-12),
                    "jpca_shuffled_r2_skew": shuffled["r2_skew"], "jpca_shuffled_r2_full": shuffled["r2_full"],
                    "pca_dims_90": pca["dims_90"]})
    prep_inputs, prep_states = analysis.preparatory_states(clean, trials)
    keep = torch.randperm(len(prep_states), generator=torch.Generator().manual_seed(config.seed))[:128]
    fp = analysis.find_fixed_points(analysis.network_map(model, prep_inputs[keep]), prep_states[keep], seed=config.seed)
    analysis.plot_fixed_points(fp, aligned, run_dir / "fixed_points.png")
    metrics.update({"fixed_points": len(fp["points"]), "fixed_point_max_abs_eig": fp["max_abs_eig"]})
    tuning = analysis.directional_tuning(analysis.tuning_rates(clean["rates"], trials), analysis.target_angles(trials, model.spec))
    analysis.plot_tuning(tuning, run_dir / "tuning.png")
    metrics.update({"tuned_fraction": tuning["tuned_fraction"]})
    if config.gif:
        analysis.animate_reaches(clean, trials, model, run_dir / "reaches.gif")
    if config.compare:
        from rnnlab.brain import compare
        from rnnlab.brain.recordings import default_data_dir

        path = default_data_dir()
        if (path / "chewie_demo.mat").is_file():
            metrics.update(compare.compare_with_recording(clean, trials, model.spec, path, run_dir / "compare.png"))
    return metrics


def load_trained(path: Path):
    from rnnlab.train.checkpoint import load_checkpoint, load_model_weights

    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"--checkpoint expects a file written by 'rnnlab motor train', got {str(path)!r} (not a file)")
    state = load_checkpoint(path)
    task = (state.get("config") or {}).get("task")
    if not task:
        raise RnnlabError(f"{path}: not a 'rnnlab motor train' checkpoint (no task config in it)")
    fields = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in task.items() if k in fields})
    model = build_model(config)
    load_model_weights(model, state["model"], path)
    return model, config


def demo(run_dir: Path) -> dict:
    """About a minute: a small network, a few hundred batches; the full analysis at a small size."""
    config = Config(hidden=50, batches=150, batches_per_epoch=50, batch_size=16, eval_repeats=4, max_minutes=1.0)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    metrics = train(config, run_dir, verbose=0)
    write_metrics(run_dir, metrics)
    _print({k: metrics[k] for k in (*JSON_KEYS, "single_peaked_fraction", "cca_mean") if k in metrics}, False, run_dir)
    return metrics


# -- CLI ----------------------------------------------------------------------------------------

JSON_KEYS = ("endpoint_error_cm", "jpca_r2_skew", "jpca_r2_full", "train_s")


def register(subparsers) -> None:
    from rnnlab.cli import add_config_arguments, add_run_arguments

    p = subparsers.add_parser("motor", help="motor control: a rate network drives an arm; decoding of real motor cortex",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="motor_command", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser("train", help="train a CTRNN to reach with a six-muscle arm; analyse; compare with real cortex",
                       epilog="Example: rnnlab motor train --json   |   rnnlab motor train --dale --curl 10")
    add_config_arguments(t, Config)
    add_run_arguments(t, json_help='print only {"endpoint_error_cm", "jpca_r2_skew", "jpca_r2_full", "train_s", ...}')
    t.set_defaults(func=_train)
    a = sub.add_parser("analyze", help="analyse a trained checkpoint (plots, jPCA, fixed points, tuning, GIF)",
                       epilog="Example: rnnlab motor analyze --checkpoint runs/motor/train/.../checkpoints/last.safetensors")
    a.add_argument("--checkpoint", required=True, help="a checkpoint written by 'rnnlab motor train'")
    a.add_argument("--run-dir", default=None)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_analyze)
    d = sub.add_parser("decode", help="LSTM/GRU vs Wiener and Kalman decoders, R2 on subject C's test split")
    d.add_argument("--data", default=None, help="folder (or .mat file) of the recordings (default ../shared/data/motor-cortex)")
    d.add_argument("--subject", default="C", help="C (chewie_demo.mat) or M (mihi_demo.mat)")
    d.add_argument("--run-dir", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_decode)
    b = sub.add_parser("bench", help="MotorNet's GRU policy vs rnnlab on the same reaching task (needs the bench extra)",
                       epilog="Example: rnnlab motor bench --batches 100 --json")
    b.add_argument("--batches", type=int, default=100, help="training batches timed for each (default 100)")
    b.add_argument("--hidden", type=int, default=100)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch intra-op thread counts to time both at, e.g. 1 2 (default: torch's current); the "
                        "best time of each is compared too, since (32, 6) tensors may not pay for a second thread")
    b.add_argument("--run-dir", default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)


def _print(metrics: dict, json_out: bool, run_dir: Path) -> None:
    if json_out:
        print(json.dumps({**{k: metrics[k] for k in JSON_KEYS if k in metrics},
                          **{k: v for k, v in metrics.items() if k not in JSON_KEYS}}))
        return
    print_table([{"figure": k, "value": v} for k, v in metrics.items() if isinstance(v, (int, float))])
    print(f"run folder: {run_dir}")


def _train(args) -> int:
    from rnnlab.cli import start_run

    config, run_dir = start_run(Config, args, "motor/train", DRY_RUN)
    metrics = train(config, run_dir, verbose=0 if args.json else 1, resume=args.resume)
    write_metrics(run_dir, metrics)
    _print(metrics, args.json, run_dir)
    return 0


def _analyze(args) -> int:
    model, config = load_trained(Path(args.checkpoint))
    run_dir = new_run_dir("motor/analyze", args.run_dir)
    write_config(run_dir, config)
    metrics = analyze(model, config, run_dir)
    write_metrics(run_dir, metrics)
    _print(metrics, args.json, run_dir)
    return 0


def _bench(args) -> int:
    from rnnlab.brain.peer import bench_motornet

    run_dir = new_run_dir("motor/bench", args.run_dir)
    threads = args.threads or [torch.get_num_threads()]
    if any(n < 1 for n in threads):
        raise RnnlabError(f"--threads must be >= 1, got {threads}")
    before, runs = torch.get_num_threads(), []
    try:
        for n in threads:  # the same trials, loss and optimiser for both, at each thread count
            torch.set_num_threads(n)
            runs.append(bench_motornet(args.batches, args.hidden, args.batch_size, args.seed))
    finally:
        torch.set_num_threads(before)
    result = dict(runs[0]) if len(runs) == 1 else {
        "by_threads": runs,
        "rnnlab_best_s_per_1000_batches": min(r["rnnlab_s_per_1000_batches"] for r in runs),
        "motornet_best_s_per_1000_batches": min(r["motornet_s_per_1000_batches"] for r in runs)}
    if len(runs) > 1:
        result["speed_ratio_best_vs_best"] = result["motornet_best_s_per_1000_batches"] / result["rnnlab_best_s_per_1000_batches"]
        for r in runs:
            result[f"speed_ratio_{r['torch_threads']}_threads"] = r["speed_ratio"]
    write_metrics(run_dir, result)
    if args.json:
        print(json.dumps(result))
    else:
        print_table([{"figure": k, "value": v} for k, v in result.items() if isinstance(v, (int, float))])
    return 0


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
