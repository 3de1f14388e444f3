"""What a run of SGD on the linear model measures, and its record.

:class:`_Meter` takes the per-epoch measurements of an iterate against its
predicted limit (errors, loss, the distances in coefficients, in the RKHS and
in the norm the step provably contracts); :func:`_record` turns the history
into the run's record, checking that the contracted distance never grew by
more than rounding (``monotone``) and warning when the step was not provable
or the run did not converge.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict

import numpy as np

from kernelfit.errors import AccuracyWarning

# A measured distance may grow by rounding only: relative slack per epoch, and an
# absolute floor relative to the starting distance.
MONOTONE_RTOL, MONOTONE_ATOL = 1e-10, 1e-13


class _Meter:
    """The per-epoch measurements of one run against its predicted limit."""

    def __init__(self, c, form, Y, classes, test_labels, theta_star, lim, lam):
        self.c, self.form, self.Y, self.classes, self.test_labels = c, form, Y, classes, test_labels
        self.theta_star, self.lim, self.lam = theta_star, lim, lam
        self.lim_coef_norm = float(np.linalg.norm(lim))
        self.lim_norm = form.norm(lim)

    def test_error(self, theta) -> float:
        pred = self.classes[np.argmax(self.form.test_out(theta), axis=1)]
        return float(np.mean(pred != self.test_labels))

    def __call__(self, theta, epoch: int, seconds: float) -> dict:
        c, form = self.c, self.form
        F = form.train_out(theta)
        e = theta - self.lim
        m = {"epoch": epoch, "seconds": seconds,
             "train_error": float(np.mean(np.argmax(F, 1) != np.argmax(self.Y, 1))),
             "test_error": self.test_error(theta),
             "loss": float(np.sum((F - self.Y) ** 2) / len(F)), "norm": form.norm(theta),
             "rel_dist": float(np.linalg.norm(e) / self.lim_coef_norm),
             "rkhs_dist": form.norm(e)}
        m["rel_rkhs_dist"] = m["rkhs_dist"] / self.lim_norm
        z = form.rkhs_coords(e)
        contraction2 = m["rkhs_dist"] ** 2
        if c.rank:
            top = float(np.linalg.norm(z[:c.rank]))
            m["rkhs_top"] = top
            m["rkhs_rest"] = float(np.sqrt(max(m["rkhs_dist"] ** 2 - top**2, 0.0)))
        k = c.precondition_rank
        if k:       # e^T K Q^{-1} e: the norm preconditioned SGD provably never increases
            contraction2 += float(np.sum((self.lam[:k] / self.lam[k] - 1.0)[:, None] * z[:k]**2))
        m["contraction_dist"] = float(np.sqrt(contraction2))
        if c.form == "primal" and c.init == "random":
            m["rel_dist_min_norm"] = float(np.linalg.norm(theta - self.theta_star)
                                           / np.linalg.norm(self.theta_star))
        return m


def _monotone(values) -> list[int]:
    """Epochs at which a distance grew by more than rounding."""
    v = np.asarray(values)
    slack = MONOTONE_RTOL * v[:-1] + MONOTONE_ATOL * v[0]
    return [int(i) + 1 for i in np.flatnonzero(v[1:] > v[:-1] + slack)]


def settled(history, holds):
    """The first epoch from which ``holds(measurements)`` is true to the end, or None."""
    for h in reversed(history):
        if not holds(h):
            return h["epoch"] + 1 if h is not history[-1] else None
    return 0


def first_epoch(history, holds):
    """The first epoch whose measurements satisfy ``holds``, or None."""
    return next((h["epoch"] for h in history if holds(h)), None)


def fitted(h) -> bool:
    """The iterate fits the training set: 0-1 train error (argmax of the outputs) is 0."""
    return h["train_error"] == 0


def epochs_to_fit(record: dict) -> int | None:
    """The record's first epoch with train error 0 (None: not within its epochs)."""
    if "epochs_to_fit" in record:
        return record["epochs_to_fit"]
    # a record made before the field existed has the same key (the field is no setting)
    # and is reused: the same rule on its stored per-epoch train error
    return first_epoch(record["history"], fitted)


def within_text(epoch: int | None, epochs_run: int) -> str:
    """An epoch count as a table says it: the number, or "not within E epochs"."""
    return str(epoch) if epoch is not None else f"not within {epochs_run} epochs"


def fit_text(record: dict) -> str:
    """The record's epochs to fit as a table says it (:func:`within_text`)."""
    return within_text(epochs_to_fit(record), record["epochs_run"])


def _record(c, history, facts) -> dict:
    last, notes = history[-1], []
    eta, bound = facts["lr"], facts["step_bound"]["bound"]
    provable = eta < 2.0 / bound
    grew = _monotone([h["contraction_dist"] for h in history])
    grew_rkhs = _monotone([h["rkhs_dist"] for h in history])
    if provable and grew:
        notes.append(f"the contraction distance grew at epochs {grew[:10]} although eta < "
                     "2 / L_b: the step-size bound failed")
    if not provable:
        notes.append(f"lr {eta:.4g} exceeds the provable 2 / L_b = {2 / bound:.4g}; "
                     "no monotone decrease is guaranteed")
    converged = None if not c.tol else bool(last["rel_dist"] <= c.tol)
    if converged is False:
        notes.append(f"relative distance to the limit {last['rel_dist']:.3g} > tol {c.tol:g} "
                     f"after {last['epoch']} epochs: not converged")
    for note in notes:
        warnings.warn(note, AccuracyWarning, stacklevel=4)
    out = {
        "config": asdict(c), **facts, "lr_provable": bool(provable),
        "epochs_run": last["epoch"], "steps": last["epoch"] * -(-facts["n_train"] // c.batch_size),
        **{k: last[k] for k in ("train_error", "test_error", "rel_dist", "rel_rkhs_dist",
                                "rkhs_dist", "norm", "loss")},
        "converged": converged, "monotone": not grew, "monotone_rkhs": not grew_rkhs,
        "grew_at_epochs": grew[:50], "rkhs_grew_at_epochs": grew_rkhs[:50],
        "train_error_0_from_epoch": settled(history, fitted),
        # from the per-epoch train error already measured: the first epoch it reached 0
        # (BMM18's "epochs to fit"; train_error_0_from_epoch is when it stayed there)
        "epochs_to_fit": first_epoch(history, fitted),
        "notes": notes, "history": history,
    }
    if c.form == "primal" and c.init == "random":
        out["rel_dist_min_norm"] = last["rel_dist_min_norm"]
        out["norm_excess"] = facts["norm_limit"] - facts["norm_min"]
        out["norm_ratio"] = facts["norm_limit"] / facts["norm_min"]
    return out
