"""Relativistic kinematics of the dimuon generator and analysis: four-vectors, two-body
decays, invariant masses."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["four_vector", "pair_mass", "pt_eta_phi", "two_body", "wrap_phi"]


def four_vector(mass, pt, y, phi):
    """(E, px, py, pz), shape (4, n), of particles of `mass` with `pt`, rapidity `y`, `phi`."""
    mt = np.sqrt(mass**2 + pt**2)
    return np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)])


def two_body(rng, parent, m1, m2, spin1=False):
    """Two-body decay of `parent` (4, n) into daughters of masses m1, m2: isotropic in the
    parent's rest frame, or (`spin1`) with a ``1 + cos²θ`` distribution about the beam
    axis, as for a vector boson made from quarks (Drell-Yan)."""
    n = parent.shape[1]
    e, px, py, pz = parent
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 1e-12))
    m1 = np.broadcast_to(m1, (n,))
    m2 = np.broadcast_to(m2, (n,))
    pstar2 = (mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2) / (4 * mass**2)
    pstar = np.sqrt(np.maximum(pstar2, 0.0))
    cos_t = rng.uniform(-1.0, 1.0, n)
    if spin1:  # accept-reject on (1 + c²) / 2
        redo = rng.uniform(size=n) > (1.0 + cos_t**2) / 2.0
        while redo.any():
            cos_t[redo] = rng.uniform(-1.0, 1.0, redo.sum())
            redo[redo] = rng.uniform(size=redo.sum()) > (1.0 + cos_t[redo] ** 2) / 2.0
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = rng.uniform(-np.pi, np.pi, n)
    p = pstar * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])
    e1 = np.sqrt(m1**2 + pstar**2)
    e2 = np.sqrt(m2**2 + pstar**2)
    beta = np.stack([px, py, pz]) / e
    gamma = e / mass
    factor = gamma**2 / (gamma + 1.0)  # (γ - 1) / β², finite at β = 0

    def boost(en, mom):
        bp = np.sum(beta * mom, axis=0)
        mom_lab = mom + (factor * bp + gamma * en) * beta
        return np.concatenate([(gamma * (en + bp))[None], mom_lab])

    return boost(e1, p), boost(e2, -p)


def pt_eta_phi(v):
    """(pT, η, φ) of four-vectors `v` (4, n)."""
    pt = np.hypot(v[1], v[2])
    eta = np.arcsinh(v[3] / np.maximum(pt, 1e-9))
    return pt, eta, np.arctan2(v[2], v[1])


def wrap_phi(phi):
    """An angle mapped into [-π, π)."""
    return (phi + np.pi) % (2 * np.pi) - np.pi


def pair_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2):
    """Invariant mass of two objects given (pt, eta, phi, mass); 0 where undefined."""
    px1, py1, pz1 = pt1 * jnp.cos(phi1), pt1 * jnp.sin(phi1), pt1 * jnp.sinh(eta1)
    px2, py2, pz2 = pt2 * jnp.cos(phi2), pt2 * jnp.sin(phi2), pt2 * jnp.sinh(eta2)
    e1 = jnp.sqrt(px1**2 + py1**2 + pz1**2 + m1**2)
    e2 = jnp.sqrt(px2**2 + py2**2 + pz2**2 + m2**2)
    m2_ = (e1 + e2) ** 2 - (px1 + px2) ** 2 - (py1 + py2) ** 2 - (pz1 + pz2) ** 2
    ok = m2_ > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, m2_, 1.0)), 0.0)
