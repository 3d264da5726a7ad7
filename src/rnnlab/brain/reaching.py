"""Delayed centre-out reaching with a rate network driving the arm, trained through the arm.

Trial timeline (``dt`` = 10 ms steps): hold at the start position; the target appears at the cue
step; the go cue (the fixation input dropping from 1 to 0) comes after a random delay; the hand
must reach the target and hold there until the trial ends ``after_go`` steps later. Training
batches mix the 8 centre-out targets with random targets in the disc, and catch trials (no go
cue: the hand must stay put). An optional curl force field pushes the hand sideways in proportion
to its velocity (Shadmehr & Mussa-Ivaldi 1994).

The network is an :class:`rnnlab.CTRNNCell` whose input is the task signals (target offset,
fixation) plus the arm's delayed noisy feedback, and whose read-out (a sigmoid) gives the six muscle
excitations. :class:`ReachNet.forward` rolls the network and the arm forward together and returns
the hand path, excitations and rates; :func:`reach_loss` scores them (hand-to-target distance +
muscle effort + network activity). Gradients flow back through the arm's equations of motion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rnnlab
from rnnlab.brain.arm import Arm, ArmParams
from rnnlab.cells import activation_fn
from rnnlab.errors import RnnlabError

TASK_INPUTS = 3      # target offset x, y (x10, from the cue on) and the fixation signal
PROPRIO = 10         # joint angles (2), joint velocities (2), muscle activations (6)
VISUAL = 2           # hand position relative to the start (x10)


@dataclass
class TaskSpec:
    start: tuple = (0.0, 0.45)         # hand start (m), shoulder at the origin
    radius: float = 0.10               # centre-out target distance (m)
    n_targets: int = 8
    cue_steps: tuple = (5, 15)         # target cue step range (inclusive)
    delay_steps: tuple = (15, 40)      # cue -> go delay range (150-400 ms)
    after_go: int = 50                 # steps from go to the end of the trial (500 ms: reach and hold)
    centre_out_fraction: float = 0.5   # the rest of the reaches go to random points in the disc
    catch_fraction: float = 0.1
    curl: float = 0.0                  # curl field strength (N s / m); 0 = none
    hold_weight: float = 3.0           # loss weight of the distance from the start before the go cue
    grace_steps: int = 10              # steps after the go cue whose distance is not scored (reaction time)

    @property
    def steps(self) -> int:
        return self.cue_steps[1] + self.delay_steps[1] + self.after_go


def centre_out_targets(spec: TaskSpec) -> Tensor:
    """``(n_targets, 2)`` target positions (m) on the circle of ``radius`` around the start."""
    angle = torch.arange(spec.n_targets, dtype=torch.float32) * (2 * math.pi / spec.n_targets)
    return torch.tensor(spec.start) + spec.radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)


def make_trials(spec: TaskSpec, batch: int, generator: torch.Generator | None = None, targets: Tensor | None = None,
                catch: bool | None = None) -> dict:
    """A batch of trials: ``inputs (B, T, 3)``, ``desired (B, T, 2)``, ``weight (B, T)`` (of the distance in
    the loss: ``hold_weight`` before the go cue, 0 during the ``grace_steps`` after it, 1 after that),
    ``target (B, 2)``, ``go (B,)``, ``catch (B,)``.

    ``targets (B, 2)`` fixes the targets (held-out centre-out sets); ``catch`` forces / forbids catch
    trials (None: draw them with ``catch_fraction``).
    """
    g = generator
    start = torch.tensor(spec.start)
    T = spec.steps
    if targets is None:
        kind = torch.rand(batch, generator=g) < spec.centre_out_fraction
        idx = torch.randint(spec.n_targets, (batch,), generator=g)
        ring = centre_out_targets(spec)[idx]
        r = spec.radius * torch.rand(batch, generator=g).sqrt()
        phi = 2 * math.pi * torch.rand(batch, generator=g)
        disc = start + torch.stack([r * torch.cos(phi), r * torch.sin(phi)], -1)
        targets = torch.where(kind.unsqueeze(-1), ring, disc)
    elif targets.shape != (batch, 2):
        raise RnnlabError(f"targets must have shape ({batch}, 2), got {tuple(targets.shape)}")
    cue = torch.randint(spec.cue_steps[0], spec.cue_steps[1] + 1, (batch,), generator=g)
    go = cue + torch.randint(spec.delay_steps[0], spec.delay_steps[1] + 1, (batch,), generator=g)
    if catch is None:
        is_catch = torch.rand(batch, generator=g) < spec.catch_fraction
    else:
        is_catch = torch.full((batch,), bool(catch))
    go = torch.where(is_catch, torch.full_like(go, T), go)
    t = torch.arange(T)
    shown = (t >= cue.unsqueeze(-1)).float().unsqueeze(-1)              # (B, T, 1)
    moving = (t >= go.unsqueeze(-1)).unsqueeze(-1)                      # (B, T, 1)
    offset = (targets - start) * 10.0
    inputs = torch.cat([shown * offset.unsqueeze(1), (~moving).float()], -1)
    desired = torch.where(moving, targets.unsqueeze(1), start.expand(batch, 1, 2))
    weight = torch.where(t < go.unsqueeze(-1), spec.hold_weight,
                         torch.where(t < (go + spec.grace_steps).unsqueeze(-1), 0.0, 1.0))
    return {"inputs": inputs, "desired": desired, "weight": weight, "target": targets, "go": go, "cue": cue, "catch": is_catch}


class ReachNet(nn.Module):
    """CTRNN -> sigmoid muscle excitations -> arm, rolled forward together.

    ``forward(inputs (B, T, 3), curl (B,) or None)`` returns ``{"hand": (B, T, 2), "excitation":
    (B, T, 6), "rates": (B, T, H), "states": (B, T, H)}`` (``states``: the
    synaptic currents ``x`` of the CTRNN equation; ``rates = f(states)``).
    """

    def __init__(self, hidden: int = 100, dt: float = 0.01, tau: float = 0.05, activation: str = "tanh",
                 noise_std: float = 0.05, dale_ratio: float | None = None, spec: TaskSpec | None = None,
                 arm: ArmParams | None = None):
        super().__init__()
        self.spec = spec or TaskSpec()
        self.arm = Arm(arm or ArmParams(dt=dt))
        if abs(self.arm.p.dt - dt) > 1e-12:
            raise RnnlabError(f"network and arm must share dt, got {dt} and {self.arm.p.dt}")
        self.cell = rnnlab.CTRNNCell(TASK_INPUTS + PROPRIO + VISUAL, hidden, dt=dt, tau=tau, activation=activation,
                                     noise_std=noise_std, dale_ratio=dale_ratio)
        self.readout = nn.Linear(hidden, Arm.n_muscles)
        with torch.no_grad():
            self.readout.weight.mul_(0.1)
            self.readout.bias.fill_(-3.0)   # start near-silent muscles (sigmoid(-3) = 5% excitation)
        self.register_buffer("start", torch.tensor(self.spec.start))
        self.register_buffer("q0", self.arm.inverse_kinematics(self.start.unsqueeze(0))[0])
        self.feedback_noise = True

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    def forward(self, inputs: Tensor, curl: Tensor | None = None, x0: Tensor | None = None) -> dict:
        """Network and arm rolled forward together, every reach of the batch at once.

        Per 10 ms step: the CTRNN Euler step (recurrent drive + delayed feedback, one ``addmm`` each),
        the sigmoid read-out of the six excitations, and one fused arm step (:meth:`Arm.fused_step`:
        muscles, skeleton, activation and hand as one autograd node). Everything that does not depend
        on the arm is hoisted out of the loop: the task-input projection and bias, the projection of the
        feedback noise and of the feedback's constant offsets, and the network noise. The feedback
        ``[q - q0, 0.2 qd, a]`` and ``10 (hand - start)`` enters through weights scaled once per call.
        """
        if inputs.dim() != 3 or inputs.shape[-1] != TASK_INPUTS:
            raise RnnlabError(f"ReachNet expects inputs (batch, time, {TASK_INPUTS}), got {tuple(inputs.shape)}")
        B, T, _ = inputs.shape
        arm, p, cell = self.arm, self.arm.p, self.cell
        H, alpha, f = cell.hidden_size, cell.alpha, activation_fn(cell.activation)
        w_rec = cell.recurrent_weight()
        w_task, w_fb = cell.weight_ih[:, :TASK_INPUTS], cell.weight_ih[:, TASK_INPUTS:]
        w_prop, w_vis = w_fb[:, :PROPRIO], w_fb[:, PROPRIO:]
        noise = cell.noise((T, B, H), inputs)
        fb_scale = inputs.new_tensor([p.proprio_noise] * PROPRIO + [p.visual_noise] * VISUAL)
        fb_noise = (torch.randn(T, B, PROPRIO + VISUAL, dtype=inputs.dtype, device=inputs.device) * fb_scale
                    if self.feedback_noise else None)
        # feedback = [q - q0, 0.2 qd, a] = state * scale - [q0, 0, 0] and 10 (hand - start): scale the weights,
        # hoist the offsets (and the feedback noise, and the network noise / alpha for the lerp below)
        w_state = w_prop * inputs.new_tensor([1.0, 1.0, 0.2, 0.2] + [1.0] * Arm.n_muscles)
        w_hand = 10.0 * w_vis
        offset = -(w_prop[:, :2] @ self.q0 + w_hand @ self.start)
        xw = F.linear(inputs.transpose(0, 1), w_task, offset if cell.bias is None else cell.bias + offset)  # (T, B, H)
        if fb_noise is not None:
            xw = xw + F.linear(fb_noise, w_fb)
        if noise is not None:
            xw = xw + noise / alpha
        xw = xw.unbind(0)
        use_curl = curl is not None and bool((curl != 0).any())
        if use_curl:
            curl = curl.to(inputs.dtype).reshape(B, 1)
        q0 = self.q0.expand(B, 2)
        x = inputs.new_zeros(B, H) if x0 is None else x0
        r = f(x)
        arm_states = [torch.cat([q0, inputs.new_zeros(B, 2), arm.rest_activation(q0)], -1)]   # [q, qd, a] (B, 10)
        hands = [arm.hand(q0)]
        w_rec_t, w_state_t, w_hand_t, w_out_t = w_rec.t(), w_state.t(), w_hand.t(), self.readout.weight.t()
        excit, rates, states = [], [], []
        for t in range(T):
            drive = torch.addmm(xw[t], r, w_rec_t).addmm(arm_states[max(0, t - p.proprio_delay)], w_state_t) \
                .addmm(hands[max(0, t - p.visual_delay)], w_hand_t)
            x = torch.lerp(x, drive, alpha)         # (1 - alpha) x + alpha (W_rec r + W_in u + b) + noise
            r = f(x)
            u = torch.sigmoid(torch.addmm(self.readout.bias, r, w_out_t))
            torque = None
            if use_curl:
                q, qd = arm_states[-1][:, :2], arm_states[-1][:, 2:4]
                v = arm.hand_velocity(q, qd)
                torque = arm.hand_force_torque(q, curl * torch.stack([-v[:, 1], v[:, 0]], -1))  # F = k [[0,-1],[1,0]] v
            state, hand = arm.fused_step(arm_states[-1], u, torque)
            arm_states.append(state)
            hands.append(hand)
            excit.append(u)
            rates.append(r)
            states.append(x)
        return {"hand": torch.stack(hands[1:], 1), "joint_velocity": torch.stack(arm_states[1:], 1)[..., 2:4],
                "excitation": torch.stack(excit, 1), "rates": torch.stack(rates, 1), "states": torch.stack(states, 1)}


@dataclass
class LossWeights:
    position: float = 1.0     # mean hand-to-desired distance (cm)
    effort: float = 1e-2      # mean squared muscle excitation
    activity: float = 1e-3    # mean squared firing rate
    weights: float = 0.0      # mean squared recurrent weight


def reach_loss(pred: dict, desired: Tensor, weights: LossWeights = LossWeights(), model: ReachNet | None = None) -> Tensor:
    """Hand-to-desired distance (cm, every step, weighted) + muscle effort + network activity (+ weight decay).

    ``desired`` is ``(B, T, 2)`` positions (every step weighted 1) or ``(B, T, 3)``: positions and the
    per-step weight of :func:`make_trials`.
    """
    if desired.dim() != 3 or desired.shape[-1] not in (2, 3) or desired.shape[:2] != pred["hand"].shape[:2]:
        raise RnnlabError(f"reach_loss expects desired (B, T, 2 or 3) matching the hand path "
                          f"{tuple(pred['hand'].shape)}, got {tuple(desired.shape)}")
    dist = ((pred["hand"] - desired[..., :2]).pow(2).sum(-1) + 1e-8).sqrt() * 100.0
    if desired.shape[-1] == 3:
        dist = dist * desired[..., 2]
    loss = weights.position * dist.mean() + weights.effort * pred["excitation"].pow(2).mean() \
        + weights.activity * pred["rates"].pow(2).mean()
    if weights.weights and model is not None:
        loss = loss + weights.weights * model.cell.weight_penalty()
    return loss


class ReachBatches:
    """Freshly generated training batches (an iterable for :meth:`rnnlab.train.Trainer.fit`).

    Each item is ``((inputs, curl), desired)`` with ``desired (B, T, 3)``: positions and loss weights;
    the draw depends only on ``(seed, epoch, batch)``.
    """

    def __init__(self, spec: TaskSpec, batch_size: int, batches_per_epoch: int, seed: int = 0):
        if batch_size < 1 or batches_per_epoch < 1:
            raise RnnlabError(f"batch_size and batches_per_epoch must be >= 1, got {batch_size}, {batches_per_epoch}")
        self.spec, self.batch_size, self.n, self.seed, self.epoch = spec, batch_size, batches_per_epoch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 17)
        for _ in range(self.n):
            trials = make_trials(self.spec, self.batch_size, g)
            curl = torch.full((self.batch_size,), float(self.spec.curl))
            yield (trials["inputs"], curl), torch.cat([trials["desired"], trials["weight"].unsqueeze(-1)], -1)


def held_out_trials(spec: TaskSpec, repeats: int, seed: int = 12345) -> dict:
    """``repeats`` reaches to each of the 8 centre-out targets (no catch trials), a fixed held-out draw."""
    g = torch.Generator().manual_seed(seed)
    ring = centre_out_targets(spec)
    targets = ring.repeat(repeats, 1)
    trials = make_trials(spec, targets.shape[0], g, targets=targets, catch=False)
    trials["target_index"] = torch.arange(spec.n_targets).repeat(repeats)
    return trials


@torch.no_grad()
def rollout(model: ReachNet, trials: dict, noise: bool = True, curl: float | None = None, seed: int = 0) -> dict:
    """Run ``model`` on ``trials`` (with or without network and feedback noise); numpy-free tensors out."""
    torch.manual_seed(seed)
    was_training, fb, sigma = model.training, model.feedback_noise, model.cell.noise_std
    model.eval()
    model.feedback_noise = noise
    if not noise:
        model.cell.noise_std = 0.0
    try:
        B = trials["inputs"].shape[0]
        k = model.spec.curl if curl is None else curl
        out = model(trials["inputs"], torch.full((B,), float(k)))
    finally:
        model.train(was_training)
        model.feedback_noise, model.cell.noise_std = fb, sigma
    dt = model.arm.p.dt
    hand = out["hand"]
    start = model.start.expand(B, 1, 2)
    out["speed"] = (torch.diff(torch.cat([start, hand], 1), dim=1).norm(dim=-1) / dt)
    return out
