"""The arm, the reaching task and the dynamics analysis of ``rnnlab motor``."""
import math

import numpy as np
import pytest
import torch

from rnnlab.brain import analysis
from rnnlab.brain.arm import Arm, ArmParams
from rnnlab.brain.reaching import ReachNet, TaskSpec, centre_out_targets, held_out_trials, make_trials, reach_loss
from rnnlab.errors import RnnlabError


def _energy_error(integrator: str, steps: int = 1000, seed: int = 0) -> float:
    """Max relative energy error over ``steps`` x 10 ms of free motion (no muscles, no damping, no gravity)."""
    torch.set_grad_enabled(False)
    torch.manual_seed(seed)
    arm = Arm(ArmParams(integrator=integrator, damping=0.0))
    q, qd = torch.rand(64, 2) * 2, torch.randn(64, 2) * 4
    e0 = arm.kinetic_energy(q, qd)
    worst = 0.0
    try:
        for _ in range(steps):
            q, qd = arm.integrate(q, qd, torch.zeros(64, 2))
            worst = max(worst, float(((arm.kinetic_energy(q, qd) - e0) / e0).abs().max()))
    finally:
        torch.set_grad_enabled(True)
    return worst


def test_arm_conserves_energy_without_muscles_and_damping():
    # Symplectic Euler: a bounded O(dt) oscillation, no drift over 10 s; RK4: O(dt^4).
    assert _energy_error("symplectic") < 0.05
    assert _energy_error("rk4") < 1e-3
    # The bound is tight enough to catch a wrong integrator: explicit Euler gains energy steadily.
    assert _energy_error("euler") > 0.05


def test_arm_kinematics_and_damping():
    arm = Arm()
    hand = torch.tensor([[0.05, 0.40], [-0.08, 0.5]])
    torch.testing.assert_close(arm.hand(arm.inverse_kinematics(hand)), hand, atol=1e-5, rtol=0)
    damped = Arm(ArmParams(damping=0.5))
    q, qd = torch.tensor([[0.7, 1.4]]), torch.tensor([[2.0, -1.0]])
    e0 = damped.kinetic_energy(q, qd)
    for _ in range(100):
        q, qd = damped.integrate(q, qd, torch.zeros(1, 2))
    assert damped.kinetic_energy(q, qd) < 0.5 * e0


def test_muscles_pull_the_right_way():
    arm = Arm()
    q = arm.inverse_kinematics(torch.tensor([[0.0, 0.45]]))
    rest = torch.zeros(1, 6)
    for m, expected in [(0, (1, 0)), (1, (-1, 0)), (2, (0, 1)), (3, (0, -1))]:
        a = rest.clone()
        a[0, m] = 1.0
        _, torque = arm.muscle_force(a, q, torch.zeros(1, 2))
        _, base = arm.muscle_force(rest, q, torch.zeros(1, 2))
        diff = (torque - base)[0]
        for j, sign in enumerate(expected):
            if sign:
                assert math.copysign(1, float(diff[j])) == sign, (m, diff)
    # Force-velocity: a shortening muscle is weaker than an isometric one.
    a = torch.ones(1, 6)
    iso, _ = arm.muscle_force(a, q, torch.zeros(1, 2))
    moving, _ = arm.muscle_force(a, q, torch.tensor([[-3.0, 0.0]]))  # shoulder extends: pectoralis lengthens
    assert moving[0, 1] < iso[0, 1] and moving[0, 0] > iso[0, 0]


def test_trials_and_gradient_through_the_arm():
    spec = TaskSpec()
    g = torch.Generator().manual_seed(0)
    trials = make_trials(spec, 64, g)
    assert trials["inputs"].shape == (64, spec.steps, 3)
    catch = trials["catch"]
    assert catch.any() and (~catch).any()
    # Catch trials never ask the hand to move; others move after the go cue only.
    start = torch.tensor(spec.start)
    assert torch.allclose(trials["desired"][catch], start.expand_as(trials["desired"][catch]))
    b = int(torch.nonzero(~catch)[0])
    go = int(trials["go"][b])
    assert torch.allclose(trials["desired"][b, go - 1], start) and torch.allclose(trials["desired"][b, go], trials["target"][b])
    assert torch.allclose(centre_out_targets(spec).sub(start).norm(dim=-1), torch.full((8,), spec.radius))
    model = ReachNet(hidden=8, spec=spec)
    small = make_trials(spec, 4, g)
    out = model(small["inputs"], torch.full((4,), 10.0))  # with a curl field
    loss = reach_loss(out, small["desired"])
    loss.backward()
    assert model.cell.weight_hh.grad.abs().sum() > 0 and torch.isfinite(model.readout.weight.grad).all()
    with pytest.raises(RnnlabError, match="inputs"):
        model(torch.zeros(2, 5, 4))


def _arm_step_reference(arm: Arm, state, u, torque=None):
    """:meth:`Arm.step` composed of autograd operations, on the packed state of :meth:`Arm.fused_step`."""
    q, qd, a = state[:, :2], state[:, 2:4], state[:, 4:]
    _, muscle = arm.muscle_force(a, q, qd)
    q, qd = arm.integrate(q, qd, muscle if torque is None else muscle + torque)
    return torch.cat([q, qd, arm.activation_step(a, u)], -1), arm.hand(q)


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_fused_arm_step_matches_autograd_of_the_equations(damping):
    """The NumPy forward and hand-written backward of the fused step against autograd of the same equations."""
    torch.manual_seed(0)
    arm = Arm(ArmParams(damping=damping)).double()
    B = 12
    q = arm.inverse_kinematics(torch.tensor([[0.0, 0.45]], dtype=torch.float64).expand(B, 2))
    q = q + 0.4 * torch.randn(B, 2, dtype=torch.float64)   # wide enough for passive force and clamped fl / fv
    state = torch.cat([q, 4 * torch.randn(B, 2, dtype=torch.float64), torch.rand(B, 6, dtype=torch.float64)], -1)
    state.requires_grad_()
    u = torch.rand(B, 6, dtype=torch.float64, requires_grad=True)
    torque = torch.randn(B, 2, dtype=torch.float64, requires_grad=True)
    fused, ref = arm.fused_step(state, u, torque), _arm_step_reference(arm, state, u, torque)
    for got, want in zip(fused, ref):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    weights = [torch.randn_like(t) for t in ref]
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), (state, u, torque))
             for out in (fused, ref)]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert torch.autograd.gradcheck(lambda s, v, t: arm.fused_step(s, v, t), (state[:4], u[:4], torque[:4]))
    # float32 (the training dtype): the same step to rounding
    f32 = Arm(ArmParams(damping=damping))
    s32, u32 = state.detach().float(), u.detach().float()
    for got, want in zip(f32.fused_step(s32, u32), _arm_step_reference(f32, s32, u32)):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def _reach_forward_reference(model: ReachNet, inputs, curl):
    """ReachNet's rollout as it was written before the fused step (feedback concatenated per step, the
    CTRNN step of :func:`rnnlab.cells.ctrnn_step`, :meth:`Arm.step` by autograd): the numbers to keep."""
    from rnnlab.cells import ctrnn_step

    B, T, _ = inputs.shape
    arm, p, cell = model.arm, model.arm.p, model.cell
    w_rec = cell.recurrent_weight()
    w_task, w_fb = cell.weight_ih[:, :3], cell.weight_ih[:, 3:]
    xw = torch.nn.functional.linear(inputs, w_task, cell.bias).unbind(1)
    noise = cell.noise((T, B, cell.hidden_size), inputs).unbind(0)
    fb_noise = (torch.randn(T, B, 12, dtype=inputs.dtype)
                * inputs.new_tensor([p.proprio_noise] * 10 + [p.visual_noise] * 2)).unbind(0)
    curl = curl.to(inputs.dtype).reshape(B, 1)
    q, qd = model.q0.expand(B, 2), inputs.new_zeros(B, 2)
    a, x = arm.rest_activation(q), inputs.new_zeros(B, cell.hidden_size)
    proprio, visual = [torch.cat([q - model.q0, 0.2 * qd, a], -1)], [(arm.hand(q) - model.start) * 10.0]
    hands, excit, rates = [], [], []
    for t in range(T):
        fb = torch.cat([proprio[max(0, t - p.proprio_delay)], visual[max(0, t - p.visual_delay)]], -1) + fb_noise[t]
        r, x = ctrnn_step(xw[t] + torch.nn.functional.linear(fb, w_fb), x, w_rec, cell.alpha, cell.activation, noise[t])
        u = torch.sigmoid(model.readout(r))
        v = arm.hand_velocity(q, qd)
        q, qd, a = arm.step(q, qd, a, u, curl * torch.stack([-v[:, 1], v[:, 0]], -1))
        hand = arm.hand(q)
        proprio.append(torch.cat([q - model.q0, 0.2 * qd, a], -1))
        visual.append((hand - model.start) * 10.0)
        hands.append(hand)
        excit.append(u)
        rates.append(r)
    return {"hand": torch.stack(hands, 1), "excitation": torch.stack(excit, 1), "rates": torch.stack(rates, 1)}


@pytest.mark.parametrize("dtype,dale,curl,tol", [(torch.float32, None, 0.0, 1e-5), (torch.float32, 0.8, 10.0, 1e-5),
                                                 (torch.float64, None, 10.0, 1e-11)])
def test_reach_rollout_equals_the_unfused_loop(dtype, dale, curl, tol):
    """The fused rollout (hoisted feedback, lerp Euler step, fused arm step) keeps the physics: hand paths,
    excitations, rates and every gradient equal those of the unfused loop, with noise on."""
    spec = TaskSpec()
    torch.manual_seed(1)
    model = ReachNet(hidden=16, spec=spec, dale_ratio=dale).to(dtype)
    with torch.no_grad():  # a readout strong enough to swing the arm far from the start
        model.readout.weight.normal_(0.0, 0.5)
        model.readout.bias.fill_(-1.0)
    trials = make_trials(spec, 6, torch.Generator().manual_seed(3))
    inputs = trials["inputs"][:, :60].to(dtype)
    desired = torch.cat([trials["desired"], trials["weight"].unsqueeze(-1)], -1)[:, :60].to(dtype)
    curl_t = torch.full((6,), curl)
    outs, grads = [], []
    for forward in (lambda: model(inputs, curl_t), lambda: _reach_forward_reference(model, inputs, curl_t)):
        torch.manual_seed(5)
        out = forward()
        model.zero_grad()
        reach_loss(out, desired).backward()
        outs.append(out)
        grads.append([prm.grad.clone() for prm in model.parameters()])
    assert (outs[1]["hand"] - model.start).norm(dim=-1).max() > 0.1   # the arm did move
    for key in ("hand", "excitation", "rates"):
        torch.testing.assert_close(outs[0][key], outs[1][key], atol=tol, rtol=0)
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=tol * float(want.abs().max()), rtol=0)


def test_jpca_recovers_a_planted_rotation():
    rng = np.random.default_rng(0)
    k, units, steps, conds = 6, 40, 40, 8
    a = rng.normal(size=(k, k))
    m_true = 0.15 * (a - a.T)                       # skew-symmetric: pure rotation
    from scipy.linalg import expm

    prop = expm(m_true)
    embed = np.linalg.qr(rng.normal(size=(units, k)))[0].T
    latents = []
    for _ in range(conds):
        z, traj = rng.normal(size=k), []
        for _ in range(steps):
            traj.append(z)
            z = z @ prop
        latents.append(traj)
    latents = np.array(latents)
    data = latents @ embed + 0.01 * rng.normal(size=(conds, steps, units))
    result = analysis.jpca(data, soft_norm=0.0)
    assert result["r2_skew"] > 0.9 and result["r2_full"] > 0.9
    # The fastest rotation found matches the planted one (per step, up to the midpoint/difference discretisation).
    found = np.abs(np.linalg.eigvals(result["M_skew"]).imag).max()
    planted = np.abs(np.linalg.eigvals(m_true).imag).max()
    assert abs(found - 2 * math.sin(planted / 2)) < 0.1 * planted
    # A non-rotational (decaying) system has a poor skew-symmetric fit.
    decay = np.array([np.outer(0.9 ** np.arange(steps), rng.normal(size=units)) for _ in range(conds)])
    res = analysis.jpca(decay + 0.001 * rng.normal(size=decay.shape), soft_norm=0.0)
    assert res["r2_skew"] < 0.5 * res["r2_full"]


def test_fixed_point_finder_on_a_linear_network():
    torch.manual_seed(0)
    n = 10
    a = 0.5 * torch.randn(n, n) / math.sqrt(n)
    b = torch.randn(n)
    known = torch.linalg.solve(torch.eye(n) - a, b)

    def step(x):
        return x @ a.T + b

    result = analysis.find_fixed_points(step, torch.randn(16, n) * 3, iters=800, lr=0.05, tol=1e-8)
    assert len(result["points"]) == 1
    torch.testing.assert_close(result["points"][0], known, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(np.sort(np.abs(result["eigenvalues"][0])),
                               np.sort(np.abs(torch.linalg.eigvals(a).numpy())), atol=1e-4)


def test_directional_tuning_of_cosine_units():
    angles = np.repeat(np.linspace(0, 2 * np.pi, 8, endpoint=False), 5)
    pd = np.array([0.3, 2.0, -1.0])
    rates = 1.0 + np.cos(angles[:, None] - pd) + 0.01 * np.random.default_rng(0).normal(size=(40, 3))
    result = analysis.directional_tuning(rates, angles)
    np.testing.assert_allclose(np.angle(np.exp(1j * (result["preferred"] - pd))), 0, atol=0.05)
    assert result["tuned_fraction"] == 1.0


def test_held_out_trials_cover_all_targets():
    trials = held_out_trials(TaskSpec(), 3)
    assert sorted(trials["target_index"].tolist()) == sorted(list(range(8)) * 3)
    assert not trials["catch"].any()


@pytest.mark.slow
def test_dale_signs_survive_training(tmp_path):
    """``rnnlab motor train --dale``: after training each unit's outgoing weights still share one sign."""
    from rnnlab.tasks.motor import Config, build_model, load_trained, train

    config = Config(hidden=12, dale=True, batch_size=4, batches=6, batches_per_epoch=3, learning_rate=0.05,
                    eval_repeats=1, gif=False, compare=False)
    before = build_model(config).cell.recurrent_weight().detach()
    metrics = train(config, tmp_path, verbose=0)
    model, loaded = load_trained(metrics["checkpoint"])
    assert loaded.dale
    w = model.cell.recurrent_weight().detach()
    n_exc = int(round(0.8 * 12))
    assert (w[:, :n_exc] >= 0).all() and (w[:, n_exc:] <= 0).all()
    assert not torch.allclose(w, before)  # it did train
