"""The peer: MotorNet (Codol et al. 2024, eLife 12:RP88591; PyPI ``motornet``) on the same reaching task.

MotorNet's documented set-up: a ``RigidTendonArm26`` effector (same skeleton and muscle geometry as
:mod:`rnnlab.brain.arm`) with Hill-type ``RigidTendonHillMuscle``s at ``dt = 10 ms``, wrapped in its
``Environment`` (20 ms proprioceptive and 50 ms visual delays, noise as in rnnlab), driven by its
``PolicyGRU``; its observation is the current goal (the start position until the go cue, then the
target), delayed vision and proprioception, and we append rnnlab's task inputs (target cue,
fixation) so both networks see the same task. Same trials (:func:`rnnlab.brain.reaching.make_trials`),
same loss (:func:`rnnlab.brain.reaching.reach_loss`), same batch size, same number of hidden units,
same optimizer (Adam, same learning rate, gradient-norm clip 1). rnnlab trains its
:class:`~rnnlab.brain.reaching.ReachNet` through :class:`rnnlab.train.Trainer`.

Reported: wall seconds per 1000 training batches of each and their ratio, and the endpoint error on
the same held-out noisy reaches to the 8 targets after the same number of batches.
"""
from __future__ import annotations

import time

import torch

from rnnlab.errors import RnnlabError


def _motornet():
    try:
        import motornet as mn
    except ImportError as exc:
        raise RnnlabError("rnnlab motor bench needs MotorNet: pip install 'rnnlab[bench]' "
                          "(motornet==0.3.0, installed with torch==2.13.0 kept)") from exc
    return mn


class MotorNetReacher:
    """MotorNet's environment + GRU policy rolled over rnnlab's trials (one ``forward`` = one batch of reaches)."""

    def __init__(self, hidden: int, spec, q0: torch.Tensor):
        mn = _motornet()
        self.spec, self.q0 = spec, q0
        effector = mn.effector.RigidTendonArm26(muscle=mn.muscle.RigidTendonHillMuscle(), timestep=0.01)
        self.env = mn.environment.Environment(effector=effector, max_ep_duration=spec.steps * 0.01,
                                              proprioception_delay=0.02, vision_delay=0.05,
                                              proprioception_noise=0.01, vision_noise=0.01)
        obs, _ = self.env.reset(options={"batch_size": 2})
        self.policy = mn.policy.PolicyGRU(obs.shape[-1] + 3, hidden, self.env.n_muscles, device="cpu")

    def rollout(self, trials: dict, deterministic: bool = False) -> dict:
        inputs, desired = trials["inputs"], trials["desired"]
        B, T, _ = inputs.shape
        joint = torch.cat([self.q0.expand(B, 2), torch.zeros(B, 2)], -1)
        obs, _ = self.env.reset(options={"batch_size": B, "joint_state": joint, "deterministic": deterministic})
        h = self.policy.init_hidden(B)
        hands, actions, rates = [], [], []
        for t, (u_t, goal_t) in enumerate(zip(inputs.unbind(1), desired.unbind(1))):
            self.env.goal = goal_t
            obs = torch.cat([goal_t, obs[:, 2:]], -1) if t else obs
            action, h = self.policy(torch.cat([obs, u_t], -1), h)
            obs, _, _, _, info = self.env.step(action=action, deterministic=deterministic)
            hands.append(info["states"]["fingertip"])
            actions.append(action)
            rates.append(h[0])
        return {"hand": torch.stack(hands, 1), "excitation": torch.stack(actions, 1), "rates": torch.stack(rates, 1)}


def bench_motornet(batches: int = 100, hidden: int = 100, batch_size: int = 32, seed: int = 0,
                   learning_rate: float = 3e-3, eval_repeats: int = 8) -> dict:
    """Train MotorNet's GRU policy and rnnlab's ReachNet for ``batches`` batches each; time and score both."""
    from rnnlab.brain.reaching import (LossWeights, ReachBatches, ReachNet, TaskSpec, held_out_trials, make_trials,
                                       reach_loss, rollout)
    from rnnlab.metrics.motor import endpoint_error_cm
    from rnnlab.train import Trainer, seed_everything

    if batches < 1:
        raise RnnlabError(f"--batches must be >= 1, got {batches}")
    spec, weights = TaskSpec(), LossWeights()
    held = held_out_trials(spec, eval_repeats)

    seed_everything(seed)
    model = ReachNet(hidden=hidden, spec=spec)
    trainer = Trainer(model, lambda pred, desired: reach_loss(pred, desired, weights), learning_rate=learning_rate,
                      clipnorm=1.0, seed=seed)
    start = time.perf_counter()
    trainer.fit(ReachBatches(spec, batch_size, batches, seed), epochs=1, verbose=0)
    rnnlab_s = time.perf_counter() - start
    rnnlab_err = endpoint_error_cm(rollout(model, held, seed=seed)["hand"][:, -1], held["target"])

    seed_everything(seed)
    peer = MotorNetReacher(hidden, spec, model.q0)
    opt = torch.optim.Adam(peer.policy.parameters(), lr=learning_rate)
    g = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    start = time.perf_counter()
    for _ in range(batches):
        trials = make_trials(spec, batch_size, g)
        loss = reach_loss(peer.rollout(trials), torch.cat([trials["desired"], trials["weight"].unsqueeze(-1)], -1), weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.policy.parameters(), 1.0)
        opt.step()
    motornet_s = time.perf_counter() - start
    with torch.no_grad():
        torch.manual_seed(seed)
        peer_err = endpoint_error_cm(peer.rollout(held)["hand"][:, -1], held["target"])
    import motornet

    return {"batches": batches, "hidden": hidden, "batch_size": batch_size, "steps_per_trial": spec.steps,
            "rnnlab_s_per_1000_batches": 1000 * rnnlab_s / batches,
            "motornet_s_per_1000_batches": 1000 * motornet_s / batches,
            "speed_ratio": motornet_s / rnnlab_s,
            "rnnlab_endpoint_error_cm": rnnlab_err, "motornet_endpoint_error_cm": peer_err,
            "motornet_version": motornet.__version__, "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()}
