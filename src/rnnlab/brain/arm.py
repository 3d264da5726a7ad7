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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

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
        tau = torch.where(u > a, TAU_ACT, TAU_DEACT)
        return a + self.p.dt * (u - a) / tau

    # -- the step ---------------------------------------------------------------------------------

    def step(self, q: Tensor, qd: Tensor, a: Tensor, u: Tensor, hand_force: Tensor | None = None):
        """Advance one ``dt``: returns ``(q, qd, a)``. Torque uses the activation at the step start."""
        _, torque = self.muscle_force(a, q, qd)
        if hand_force is not None:
            torque = torque + (self.jacobian(q).transpose(-1, -2) @ hand_force.unsqueeze(-1)).squeeze(-1)
        q, qd = self.integrate(q, qd, torque)
        return q, qd, self.activation_step(a, u)

    def rest_activation(self, q: Tensor) -> Tensor:
        """A small co-contraction baseline to start from (1% of maximum)."""
        return torch.full((q.shape[0], self.n_muscles), 0.01, dtype=q.dtype, device=q.device)
