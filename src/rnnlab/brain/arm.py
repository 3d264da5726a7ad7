"""A differentiable planar two-joint arm moved by six muscles, batched over reaches.

The skeleton is a two-link arm in the horizontal plane (no gravity): shoulder angle ``q1`` and
elbow angle ``q2``, hand at ``(l1 cos q1 + l2 cos(q1+q2), l1 sin q1 + l2 sin(q1+q2))``. Its
equation of motion is ``M(q) q'' + C(q, q') q' + B q' = tau_muscles + J(q)^T F_hand`` with
the standard two-link inertia matrix (each link's inertia taken about its centre of mass)::

    M11 = m1 lc1^2 + I1 + m2 (l1^2 + lc2^2) + I2 + 2 m2 l1 lc2 cos q2
    M12 = m2 lc2^2 + I2 + m2 l1 lc2 cos q2,     M22 = m2 lc2^2 + I2
    C q' = m2 l1 lc2 sin q2 (-(2 q1' + q2') q2',  q1'^2)

Parameters (segment lengths, masses, centre-of-mass distances and inertias of a human upper arm and
forearm+hand) are those of Nijhof & Kouwenhoven (2000), "Simulation of multijoint arm movements",
in Winters & Crago (eds), *Biomechanics and Neural Control of Posture and Movement*, pp 363-372,
as used for the ``RigidTendonArm26`` effector of MotorNet (Codol et al. 2024, eLife 12:RP88591).

Six lumped muscles (Kistemaker, Wong & Gribble 2010, J Neurophysiol 104:2985; the same values in
MotorNet's ``RigidTendonArm26``): pectoralis (shoulder flexor), posterior deltoid (shoulder
extensor), brachioradialis (elbow flexor), triceps lateral (elbow extensor), biceps (bi-articular
flexor), triceps long head (bi-articular extensor). Musculotendon length is a quadratic polynomial
of the joint angles; the moment arms are its derivatives; the tendon is rigid. Each muscle has

* first-order activation dynamics ``a' = (u - a) / tau`` with ``tau = 15 ms`` when activating and
  ``50 ms`` when deactivating (Thelen 2003, J Biomech Eng 125:70; MotorNet's defaults);
* Hill-type force ``F = F_max (a FL(l) FV(v) + FP(l))``: active force-length parabola of width
  0.66 optimal lengths and the passive element beyond 1.4 optimal lengths (Kistemaker et al. 2010),
  and the Hill (1938) force-velocity hyperbola for shortening (``a_f = 0.25``, ``v_max = 10``
  optimal lengths/s) with an eccentric plateau of 1.8 ``F_max`` (Thelen 2003).

Integration: muscle activation by forward Euler (stable for ``dt < tau``); the skeleton, with the
muscle torque held over the step, by symplectic Euler in canonical coordinates
(``integrator="symplectic"``, the default: one force evaluation per step and no energy drift, only
a bounded O(dt) oscillation) or classical fourth-order Runge-Kutta (``"rk4"``: four evaluations,
energy error O(dt^4) per unit time but drifting). ``integrator="euler"`` (explicit Euler) is offered
only to show, in the tests, that it gains energy without bound.

Feedback: proprioception (joint angles and velocities, muscle activations) after ``proprio_delay``
steps and vision (hand position) after ``visual_delay`` steps, each with Gaussian noise.

Training steps the arm with :meth:`Arm.fused_step`: the same equations as :meth:`Arm.step` as one
autograd node, NumPy forward and a hand-written backward (the per-operation overhead of ~200 tiny
torch operations per step, not arithmetic, was the cost of training through the arm).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.errors import RnnlabError

INTEGRATORS = ("symplectic", "rk4", "euler")
MUSCLES = ("pectoralis", "deltoid", "brachioradialis", "triceps_lat", "biceps", "triceps_long")


@dataclass
class ArmParams:
    # Skeleton: Nijhof & Kouwenhoven (2000).
    m1: float = 1.82       # upper-arm mass (kg)
    m2: float = 1.43       # forearm + hand mass (kg)
    lc1: float = 0.135     # shoulder to upper-arm centre of mass (m)
    lc2: float = 0.165     # elbow to forearm centre of mass (m)
    i1: float = 0.051      # upper-arm inertia about its centre of mass (kg m^2)
    i2: float = 0.057      # forearm inertia about its centre of mass (kg m^2)
    l1: float = 0.309      # upper-arm length (m)
    l2: float = 0.333      # forearm + hand length (m)
    damping: float = 0.0   # joint viscosity B (N m s / rad); 0: the muscles' force-velocity damps
    dt: float = 0.01       # step (s)
    integrator: str = "symplectic"
    proprio_delay: int = 2     # steps (20 ms; spinal/transcortical proprioceptive loop)
    visual_delay: int = 5      # steps (50 ms in this model; kept short so the hand position stays usable)
    proprio_noise: float = 0.01
    visual_noise: float = 0.01


# Muscle parameters: Kistemaker et al. (2010), as tabulated in MotorNet's RigidTendonArm26.
MAX_FORCE = (838.0, 1207.0, 1422.0, 1549.0, 414.0, 603.0)          # N
TENDON_LENGTH = (0.039, 0.066, 0.172, 0.187, 0.204, 0.217)         # m
OPTIMAL_LENGTH = (0.134, 0.140, 0.092, 0.093, 0.137, 0.127)        # m
# Musculotendon length L = a0 + sum_j (a1_j + a2_j qt_j) qt_j with qt = q - (pi/2, 0) (Nijhof & Kouwenhoven 2000).
GEOM_A0 = (0.151, 0.2322, 0.2859, 0.2355, 0.3329, 0.2989)
GEOM_A1 = ((-0.03, 0.03, 0.0, 0.0, -0.03, 0.03), (0.0, 0.0, -0.014, 0.025, -0.016, 0.03))
GEOM_A2 = ((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.0, 0.0, -4e-3, -2.2e-3, -5.7e-3, -3.2e-3))
GEOM_Q0 = (math.pi / 2, 0.0)
TAU_ACT, TAU_DEACT = 0.015, 0.05   # s (Thelen 2003)


class Arm(torch.nn.Module):
    """The arm as a module of buffers (no trained parameters); every method works on a batch.

    State: ``q (B, 2)`` joint angles (rad), ``qd (B, 2)`` joint velocities (rad/s), ``a (B, 6)``
    muscle activations. :meth:`step` advances one ``dt`` given muscle excitations ``u (B, 6)`` in
    [0, 1] and an optional external hand force ``(B, 2)`` (N).
    """

    n_muscles = 6

    def __init__(self, params: ArmParams | None = None):
        super().__init__()
        p = params or ArmParams()
        if p.integrator not in INTEGRATORS:
            raise RnnlabError(f"arm integrator must be one of {INTEGRATORS}, got {p.integrator!r}")
        if not p.dt > 0:
            raise RnnlabError(f"arm dt must be > 0 seconds, got {p.dt}")
        self.p = p
        self.k11 = p.m1 * p.lc1 ** 2 + p.i1 + p.m2 * (p.l1 ** 2 + p.lc2 ** 2) + p.i2
        self.k12 = p.m2 * p.lc2 ** 2 + p.i2
        self.k22 = p.m2 * p.lc2 ** 2 + p.i2
        self.h = p.m2 * p.l1 * p.lc2
        f = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
        self.register_buffer("max_force", f(MAX_FORCE))
        self.register_buffer("tendon", f(TENDON_LENGTH))
        self.register_buffer("l_opt", f(OPTIMAL_LENGTH))
        self.register_buffer("a0", f(GEOM_A0))
        self.register_buffer("a1", f(GEOM_A1))
        self.register_buffer("a2", f(GEOM_A2))
        self.register_buffer("q_ref", f(GEOM_Q0))

    # -- kinematics ------------------------------------------------------------------------------

    def hand(self, q: Tensor) -> Tensor:
        """Hand position ``(B, 2)`` (m) from joint angles ``(B, 2)``."""
        q1, q12 = q[:, 0], q[:, 0] + q[:, 1]
        return torch.stack([self.p.l1 * torch.cos(q1) + self.p.l2 * torch.cos(q12),
                            self.p.l1 * torch.sin(q1) + self.p.l2 * torch.sin(q12)], -1)

    def jacobian(self, q: Tensor) -> Tensor:
        """``d hand / d q`` as ``(B, 2, 2)``."""
        s1, c1 = torch.sin(q[:, 0]), torch.cos(q[:, 0])
        s12, c12 = torch.sin(q[:, 0] + q[:, 1]), torch.cos(q[:, 0] + q[:, 1])
        l1, l2 = self.p.l1, self.p.l2
        return torch.stack([torch.stack([-l1 * s1 - l2 * s12, -l2 * s12], -1),
                            torch.stack([l1 * c1 + l2 * c12, l2 * c12], -1)], -2)

    def hand_velocity(self, q: Tensor, qd: Tensor) -> Tensor:
        return (self.jacobian(q) @ qd.unsqueeze(-1)).squeeze(-1)

    def inverse_kinematics(self, hand: Tensor) -> Tensor:
        """Joint angles (elbow flexed, ``q2 > 0``) that put the hand at ``hand (B, 2)``."""
        l1, l2 = self.p.l1, self.p.l2
        d2 = (hand ** 2).sum(-1)
        c2 = ((d2 - l1 ** 2 - l2 ** 2) / (2 * l1 * l2)).clamp(-1.0, 1.0)
        q2 = torch.acos(c2)
        q1 = torch.atan2(hand[:, 1], hand[:, 0]) - torch.atan2(l2 * torch.sin(q2), l1 + l2 * torch.cos(q2))
        return torch.stack([q1, q2], -1)

    # -- skeleton --------------------------------------------------------------------------------

    def mass_matrix(self, q: Tensor) -> Tensor:
        c2 = torch.cos(q[:, 1])
        m11, m12 = self.k11 + 2 * self.h * c2, self.k12 + self.h * c2
        m22 = torch.full_like(c2, self.k22)
        return torch.stack([torch.stack([m11, m12], -1), torch.stack([m12, m22], -1)], -2)

    def kinetic_energy(self, q: Tensor, qd: Tensor) -> Tensor:
        """``0.5 q'^T M(q) q'`` per reach (J): the arm's total energy (it moves in the horizontal plane)."""
        return 0.5 * (qd.unsqueeze(-2) @ self.mass_matrix(q) @ qd.unsqueeze(-1)).reshape(-1)

    def acceleration(self, q: Tensor, qd: Tensor, torque: Tensor) -> Tensor:
        """Joint accelerations ``M^-1 (torque - C q' - B q')`` in closed form (2x2 inverse)."""
        q2 = q[:, 1]
        qd1, qd2 = qd[:, 0], qd[:, 1]
        c2, s2 = torch.cos(q2), torch.sin(q2)
        m11, m12 = self.k11 + 2 * self.h * c2, self.k12 + self.h * c2
        hs = self.h * s2
        r1 = torque[:, 0] + hs * (2 * qd1 + qd2) * qd2 - self.p.damping * qd1
        r2 = torque[:, 1] - hs * qd1 * qd1 - self.p.damping * qd2
        det = m11 * self.k22 - m12 * m12
        return torch.stack([(self.k22 * r1 - m12 * r2) / det, (m11 * r2 - m12 * r1) / det], -1)

    def _inverse(self, c2: Tensor):
        """Entries ``(A, Bc, D)`` of ``M^-1`` (symmetric) at ``cos q2 = c2``."""
        m11, m12 = self.k11 + 2 * self.h * c2, self.k12 + self.h * c2
        det = m11 * self.k22 - m12 * m12
        return self.k22 / det, -m12 / det, m11 / det

    def symplectic_step(self, q: Tensor, qd: Tensor, torque: Tensor) -> tuple[Tensor, Tensor]:
        """Symplectic Euler in canonical coordinates ``p = M(q) q'`` (Hairer, Lubich & Wanner 2006, Thm VI.3.3)::

            p_{n+1} = p_n + dt (tau - dH/dq(q_n, p_{n+1})),   q_{n+1} = q_n + dt M(q_n)^-1 p_{n+1}

        with ``H = 0.5 p^T M(q)^-1 p``. ``dH/dq1 = 0`` (the shoulder angle is cyclic) and
        ``dH/dq2 = h sin q2 v1 (v1 + v2)`` with ``v = M(q_n)^-1 p_{n+1}``: the implicit update of ``p2``
        is one quadratic equation, solved in closed form. Damping and muscle torque are explicit.
        """
        dt = self.p.dt
        q2 = q[:, 1]
        c2, s2 = torch.cos(q2), torch.sin(q2)
        m11, m12 = self.k11 + 2 * self.h * c2, self.k12 + self.h * c2
        qd1, qd2 = qd[:, 0], qd[:, 1]
        tau1 = torque[:, 0] - self.p.damping * qd1
        tau2 = torque[:, 1] - self.p.damping * qd2
        p1 = m11 * qd1 + m12 * qd2 + dt * tau1
        p2 = m12 * qd1 + self.k22 * qd2
        det = m11 * self.k22 - m12 * m12
        ia, ib, idd = self.k22 / det, -m12 / det, m11 / det
        # p2' = p2 + dt tau2 - dt hs (a0 + ib p2') (b0 + e p2'),  a0 = ia p1', b0 = (ia + ib) p1', e = ib + idd
        hs = dt * self.h * s2
        a0, b0, e = ia * p1, (ia + ib) * p1, ib + idd
        qa = hs * ib * e
        qb = 1.0 + hs * (a0 * e + ib * b0)
        qc = hs * a0 * b0 - p2 - dt * tau2
        p2 = -2.0 * qc / (qb + (qb * qb - 4.0 * qa * qc).clamp(min=0.0).sqrt())   # the root near p2 (stable form)
        v1, v2 = ia * p1 + ib * p2, ib * p1 + idd * p2
        q_new = q + dt * torch.stack([v1, v2], -1)
        ja, jb, jd = self._inverse(torch.cos(q_new[:, 1]))
        return q_new, torch.stack([ja * p1 + jb * p2, jb * p1 + jd * p2], -1)

    def integrate(self, q: Tensor, qd: Tensor, torque: Tensor) -> tuple[Tensor, Tensor]:
        """One ``dt`` of the skeleton with ``torque`` held over the step."""
        dt = self.p.dt
        if self.p.integrator == "symplectic":
            return self.symplectic_step(q, qd, torque)
        if self.p.integrator == "euler":
            return q + dt * qd, qd + dt * self.acceleration(q, qd, torque)
        k1v = self.acceleration(q, qd, torque)
        k2q = qd + 0.5 * dt * k1v
        k2v = self.acceleration(q + 0.5 * dt * qd, k2q, torque)
        k3q = qd + 0.5 * dt * k2v
        k3v = self.acceleration(q + 0.5 * dt * k2q, k3q, torque)
        k4q = qd + dt * k3v
        k4v = self.acceleration(q + dt * k3q, k4q, torque)
        q_new = q + (dt / 6.0) * (qd + 2 * k2q + 2 * k3q + k4q)
        qd_new = qd + (dt / 6.0) * (k1v + 2 * k2v + 2 * k3v + k4v)
        return q_new, qd_new

    # -- muscles ---------------------------------------------------------------------------------

    def geometry(self, q: Tensor, qd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised muscle length and velocity ``(B, 6)`` and moment arms ``(B, 2, 6)`` (m)."""
        qt = (q - self.q_ref).unsqueeze(-1)                      # (B, 2, 1)
        moment = self.a1 + 2 * self.a2 * qt                      # dL/dq, (B, 2, 6)
        length = self.a0 + ((self.a1 + self.a2 * qt) * qt).sum(1) - self.tendon
        velocity = (moment * qd.unsqueeze(-1)).sum(1)
        return length / self.l_opt, velocity / (10.0 * self.l_opt), moment

    def muscle_force(self, a: Tensor, q: Tensor, qd: Tensor) -> tuple[Tensor, Tensor]:
        """Hill-type muscle forces ``(B, 6)`` (N) and the joint torque ``(B, 2)`` they produce."""
        l_n, v_n, moment = self.geometry(q, qd)
        fl = (1.0 - (l_n - 1.0) ** 2 / 0.66 ** 2).clamp(min=0.01)
        fp = (l_n - 1.4).clamp(min=0.0) ** 2 / (1.66 - 1.4) ** 2
        v = v_n.clamp(-1.0, 1.0)
        shorten = (1.0 + v) / (1.0 - v / 0.25)
        lengthen = 1.0 + 0.8 * v / (v + 0.18)
        fv = torch.where(v < 0, shorten, lengthen.clamp(max=1.8))
        force = self.max_force * (a * fl * fv + fp)
        torque = -(moment * force.unsqueeze(1)).sum(-1)  # a muscle that shortens (dL/dq < 0) drives q up
        return force, torque

    def activation_step(self, a: Tensor, u: Tensor) -> Tensor:
        tau = torch.where(u > a, a.new_tensor(TAU_ACT), a.new_tensor(TAU_DEACT))   # in a's dtype (float64 too)
        return a + self.p.dt * (u - a) / tau

    # -- the step ---------------------------------------------------------------------------------

    def step(self, q: Tensor, qd: Tensor, a: Tensor, u: Tensor, hand_force: Tensor | None = None):
        """Advance one ``dt``: returns ``(q, qd, a)``. Torque uses the activation at the step start."""
        _, torque = self.muscle_force(a, q, qd)
        if hand_force is not None:
            torque = torque + self.hand_force_torque(q, hand_force)
        q, qd = self.integrate(q, qd, torque)
        return q, qd, self.activation_step(a, u)

    def rest_activation(self, q: Tensor) -> Tensor:
        """A small co-contraction baseline to start from (1% of maximum)."""
        return torch.full((q.shape[0], self.n_muscles), 0.01, dtype=q.dtype, device=q.device)

    def hand_force_torque(self, q: Tensor, force: Tensor) -> Tensor:
        """Joint torque ``J(q)^T F`` ``(B, 2)`` of an external force ``F (B, 2)`` (N) on the hand."""
        return (self.jacobian(q).transpose(-1, -2) @ force.unsqueeze(-1)).squeeze(-1)

    # -- the fused step (training) -------------------------------------------------------------------

    def fused_step(self, state: Tensor, u: Tensor, torque: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`step` on a packed state, as one autograd node: ``state (B, 10) = [q, qd, a]``, excitations
        ``u (B, 6)`` and an optional external joint torque ``(B, 2)`` -> ``(state', hand' (B, 2))``.

        Same equations as :meth:`step` (symplectic integrator); the forward and a hand-written backward
        run in NumPy on the CPU (see :class:`_FusedArmStep`). Other integrators, devices or dtypes
        compose :meth:`step` instead (same numbers, autograd through every operation).
        """
        if state.dim() != 2 or state.shape[-1] != 4 + self.n_muscles or u.shape != (state.shape[0], self.n_muscles):
            raise RnnlabError(f"fused_step expects state (B, {4 + self.n_muscles}) and u (B, {self.n_muscles}), "
                              f"got {tuple(state.shape)} and {tuple(u.shape)}")
        if (self.p.integrator == "symplectic" and state.device.type == "cpu" and u.device == state.device
                and state.dtype in (torch.float32, torch.float64) and u.dtype == state.dtype
                and (torque is None or torque.dtype == state.dtype)):
            return _FusedArmStep.apply(state, u, torque, self)
        q, qd, a = state[:, :2], state[:, 2:4], state[:, 4:]
        tq = self.muscle_force(a, q, qd)[1]
        q, qd = self.integrate(q, qd, tq if torque is None else tq + torque)
        return torch.cat([q, qd, self.activation_step(a, u)], -1), self.hand(q)

    def _numpy_constants(self, dtype) -> dict:
        """The muscle constants of the fused step as NumPy arrays of ``dtype``, laid out for column
        (``(features, batch)``) arrays; cached per dtype."""
        cache = self.__dict__.setdefault("_np_cache", {})
        if dtype not in cache:
            f64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
            a12 = np.concatenate([f64(self.a1), f64(self.a2)], 0)          # (4, 6): rows a1_q1, a1_q2, a2_q1, a2_q2
            l_opt = f64(self.l_opt)
            geo = np.zeros((12, 8))                                        # [qt, qt^2, qd, 2 qt qd] -> [l_n, v_n]
            geo[:6, :4] = (a12 / l_opt).T
            geo[6:, 4:] = (a12 / (10.0 * l_opt)).T
            bias = np.concatenate([(f64(self.a0) - f64(self.tendon)) / l_opt, np.zeros(6)])[:, None]
            c = lambda x: np.ascontiguousarray(x, dtype=dtype)  # noqa: E731
            cache[dtype] = {"geo": c(geo), "geo_t": c(geo.T), "geo_bias": c(bias), "a12": c(a12), "a12_t": c(a12.T),
                            "max_force": c(f64(self.max_force)[:, None]), "q_ref": c(f64(self.q_ref)[:, None])}
        return cache[dtype]


def _columns(t: Tensor) -> np.ndarray:
    """``(B, n)`` tensor -> its ``(n, B)`` NumPy array, contiguous (free for the fused step's own outputs)."""
    return np.ascontiguousarray(t.detach().numpy().T)


class _FusedArmStep(torch.autograd.Function):
    """One arm step (muscles, symplectic skeleton, activation, hand) as one autograd node.

    The arm's tensors are tiny (a batch of 32 reaches x 2 joints / 6 muscles), so a step built from
    torch operations costs its ~200 operations' overhead, forward and backward, not their arithmetic.
    Here the forward runs the equations of :meth:`Arm.step` in NumPy (a few times less overhead per
    operation than torch on arrays this small) on ``(features, batch)`` arrays, so every variable is a
    contiguous row, and keeps the intermediates; the outputs are transposed views of those arrays.
    The backward is the hand-written vector-Jacobian product of the same equations (checked against
    autograd of :meth:`Arm.step` and by ``torch.autograd.gradcheck`` in float64, ``tests/test_motor.py``).
    The quadratic of the implicit momentum update is differentiated implicitly: ``P2`` solves
    ``qa P2^2 + qb P2 + qc = 0`` and ``dP2 = -(P2^2 dqa + P2 dqb + dqc) / S`` with ``S = 2 qa P2 + qb``,
    the square root of the discriminant for the root taken.
    """

    @staticmethod
    def forward(ctx, state, u, torque, arm):
        s, uu = _columns(state), _columns(u)                              # (10, B), (6, B)
        p, k = arm.p, arm._numpy_constants(s.dtype)
        dt, h, k11, k12, k22, damping = p.dt, arm.h, arm.k11, arm.k12, arm.k22, p.damping
        q, qd, a = s[:2], s[2:4], s[4:]
        # muscles: normalised lengths and velocities from the polynomial geometry, Hill-type force
        qt = q - k["q_ref"]
        feat = np.concatenate([qt, qt * qt, qd, 2.0 * qt * qd])
        lv = k["geo"] @ feat + k["geo_bias"]
        l_n, v_n = lv[:6], lv[6:]
        d = l_n - 1.0
        fl_raw = 1.0 - d * d * (1.0 / 0.66 ** 2)
        fl = np.maximum(fl_raw, 0.01)
        ext = np.maximum(l_n - 1.4, 0.0)
        fp = ext * ext * (1.0 / (1.66 - 1.4) ** 2)
        v = np.minimum(np.maximum(v_n, -1.0), 1.0)
        neg = v < 0
        vs, vp = np.minimum(v, 0.0), np.maximum(v, 0.0)      # each branch only where it is used: no 0/0
        den_s, vl = 1.0 - vs / 0.25, vp + 0.18
        fv = np.where(neg, (1.0 + vs) / den_s, 1.0 + 0.8 * vp / vl)   # lengthening stays below the 1.8 plateau
        afl = a * fl
        force = k["max_force"] * (afl * fv + fp)
        pm = k["a12"] @ force                                         # (4, B): a1_j . force, a2_j . force
        tq = -(pm[:2] + 2.0 * qt * pm[2:])
        if torque is not None:
            tq = tq + _columns(torque)
        # skeleton: symplectic Euler in canonical coordinates (as Arm.symplectic_step)
        w1, w2 = qd[0], qd[1]
        c2, s2 = np.cos(q[1]), np.sin(q[1])
        m11, m12 = k11 + 2.0 * h * c2, k12 + h * c2
        tau1, tau2 = (tq[0], tq[1]) if not damping else (tq[0] - damping * w1, tq[1] - damping * w2)
        p1 = m11 * w1 + m12 * w2 + dt * tau1
        p2 = m12 * w1 + k22 * w2
        det = m11 * k22 - m12 * m12
        ia, ib, idd = k22 / det, -m12 / det, m11 / det
        hs = (dt * h) * s2
        a0, b0, e = ia * p1, (ia + ib) * p1, ib + idd
        qa = hs * ib * e
        qb = 1.0 + hs * (a0 * e + ib * b0)
        qc = hs * a0 * b0 - p2 - dt * tau2
        sq = np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0))
        P2 = -2.0 * qc / (qb + sq)
        out = np.empty_like(s)
        out[0] = q[0] + dt * (ia * p1 + ib * P2)
        out[1] = q[1] + dt * (ib * p1 + idd * P2)
        c2n, s2n = np.cos(out[1]), np.sin(out[1])
        m11n, m12n = k11 + 2.0 * h * c2n, k12 + h * c2n
        detn = m11n * k22 - m12n * m12n
        ja, jb, jd = k22 / detn, -m12n / detn, m11n / detn
        out[2] = ja * p1 + jb * P2
        out[3] = jb * p1 + jd * P2
        # activation (first order, faster up than down), then the hand
        tau = np.where(uu > a, s.dtype.type(TAU_ACT), s.dtype.type(TAU_DEACT))
        out[4:] = a + dt * (uu - a) / tau
        q12 = out[0] + out[1]
        c1, s1, c12, s12 = np.cos(out[0]), np.sin(out[0]), np.cos(q12), np.sin(q12)
        hand = np.stack([p.l1 * c1 + p.l2 * c12, p.l1 * s1 + p.l2 * s12])
        ctx.arm, ctx.has_torque = arm, torque is not None
        ctx.saved = (s, tau, qt, d, fl_raw, fl, fv, ext, v_n, neg, den_s, vl, afl, pm, c2, s2, m11, m12, det, ia, ib,
                     idd, hs, a0, b0, e, sq, P2, p1, s2n, m11n, m12n, detn, ja, jb, jd, s1, c1, s12, c12)
        return torch.from_numpy(out).t(), torch.from_numpy(hand).t()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_state, g_hand):
        (s, tau, qt, d, fl_raw, fl, fv, ext, v_n, neg, den_s, vl, afl, pm, c2, s2, m11, m12, det, ia, ib, idd, hs, a0,
         b0, e, sq, P2, p1, s2n, m11n, m12n, detn, ja, jb, jd, s1, c1, s12, c12) = ctx.saved
        arm = ctx.arm
        p, k = arm.p, arm._numpy_constants(s.dtype)
        dt, h, k22, damping, l1, l2 = p.dt, arm.h, arm.k22, p.damping, p.l1, p.l2
        gs, gh = _columns(g_state), _columns(g_hand)
        a, qd = s[4:], s[2:4]
        w1, w2 = qd[0], qd[1]
        # hand and activation
        e12 = l2 * (c12 * gh[1] - s12 * gh[0])
        gq1n = gs[0] + l1 * (c1 * gh[1] - s1 * gh[0]) + e12
        gq2n = gs[1] + e12
        g_u = gs[4:] * (dt / tau)
        g_a = gs[4:] - g_u
        # velocities out: w' = M(q')^-1 (p1, P2)
        gw1n, gw2n = gs[2], gs[3]
        g_p1 = ja * gw1n + jb * gw2n
        g_P2 = jb * gw1n + jd * gw2n
        gq2n = gq2n - s2n * _inverse_vjp(gw1n * p1, gw1n * P2 + gw2n * p1, gw2n * P2, m11n, m12n, detn, h, k22)
        # positions out: q' = q + dt M(q)^-1 (p1, P2)
        gv1, gv2 = dt * gq1n, dt * gq2n
        g_p1 = g_p1 + ia * gv1 + ib * gv2
        g_P2 = g_P2 + ib * gv1 + idd * gv2
        g_ia, g_ib, g_idd = gv1 * p1, gv1 * P2 + gv2 * p1, gv2 * P2
        # the root P2 of qa P2^2 + qb P2 + qc = 0 (implicit differentiation; S = 2 qa P2 + qb = sq)
        r = g_P2 / sq
        g_qc = -r
        g_qb = -r * P2
        g_qa = g_qb * P2
        g_hs = g_qa * ib * e + g_qb * (a0 * e + ib * b0) + g_qc * a0 * b0
        g_e = hs * (g_qa * ib + g_qb * a0)
        g_a0 = hs * (g_qb * e + g_qc * b0)
        g_b0 = hs * (g_qb * ib + g_qc * a0)
        g_ib = g_ib + hs * (g_qa * e + g_qb * b0) + g_b0 * p1 + g_e
        g_ia = g_ia + (g_a0 + g_b0) * p1
        g_idd = g_idd + g_e
        g_p1 = g_p1 + g_a0 * ia + g_b0 * (ia + ib)
        g_p2 = -g_qc
        g_t = np.stack([dt * g_p1, -dt * g_qc])                      # d loss / d (tau1, tau2)
        g_c2 = _inverse_vjp(g_ia, g_ib, g_idd, m11, m12, det, h, k22) + (2.0 * h) * (g_p1 * w1) \
            + h * (g_p1 * w2 + g_p2 * w1)
        g_w1 = g_p1 * m11 + g_p2 * m12
        g_w2 = g_p1 * m12 + g_p2 * k22
        if damping:
            g_w1, g_w2 = g_w1 - damping * g_t[0], g_w2 - damping * g_t[1]
        # muscles: torque = -(a1_j . force + 2 qt_j a2_j . force)
        g_pm = np.concatenate([-g_t, -2.0 * qt * g_t])
        g_qt = -2.0 * g_t * pm[2:]
        g_force = (k["a12_t"] @ g_pm) * k["max_force"]
        g_a = g_a + g_force * fl * fv
        g_fl = g_force * a * fv
        g_fv = g_force * afl
        g_ln = np.where(fl_raw >= 0.01, g_fl * d * (-2.0 / 0.66 ** 2), 0.0) + g_force * ext * (2.0 / (1.66 - 1.4) ** 2)
        dfv = np.where(neg, (1.0 + 1.0 / 0.25) / (den_s * den_s), (0.8 * 0.18) / (vl * vl))
        g_vn = np.where(np.abs(v_n) <= 1.0, g_fv * dfv, 0.0)
        g_feat = k["geo_t"] @ np.concatenate([g_ln, g_vn])          # (8, B)
        g_qt = g_qt + g_feat[0:2] + 2.0 * qt * g_feat[2:4] + 2.0 * qd * g_feat[6:8]
        g_state = np.empty_like(s)
        g_state[0] = gq1n + g_qt[0]
        g_state[1] = gq2n - s2 * g_c2 + (dt * h) * c2 * g_hs + g_qt[1]
        g_state[2:4] = g_feat[4:6] + 2.0 * qt * g_feat[6:8]
        g_state[2] += g_w1
        g_state[3] += g_w2
        g_state[4:] = g_a
        g_torque = torch.from_numpy(g_t).t() if ctx.has_torque else None
        return torch.from_numpy(g_state).t(), torch.from_numpy(g_u).t(), g_torque, None


def _inverse_vjp(g_ia, g_ib, g_id, m11, m12, det, h, k22):
    """``d/d cos(q2)`` of ``g . (M^-1 entries A, Bc, D) = g . (k22, -m12, m11) / det`` (``m11 = k11 + 2h c``,
    ``m12 = k12 + h c``, ``det = m11 k22 - m12^2``)."""
    ddet = (2.0 * h) * (k22 - m12)
    return (2.0 * h * g_id - h * g_ib - (g_ia * k22 - g_ib * m12 + g_id * m11) * ddet / det) / det
