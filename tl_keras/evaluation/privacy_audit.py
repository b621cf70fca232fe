"""A membership-inference audit: can an attacker who sees a model's losses
tell its training rows (members) from rows it never saw (non-members)?

Two attacks, each reported as the ROC AUC (0.5: no better than a coin) and
the true-positive rate at a 1% false-positive rate:
- `loss_threshold` (Yeom et al. 2018): members have lower loss; the score is
  minus the loss.
- `class_calibrated`: the loss less the mean non-member loss of the row's
  class (a per-class difficulty calibration, in the spirit of Watson et al.
  2022, with classes standing in for their reference models). Its class
  means come from one half of the non-members; both halves of members and
  the other half of non-members are scored, so no row calibrates itself.

Example:
>>> report = membership_audit(train_probabilities, train_targets, test_probabilities, test_targets)
>>> report["loss_threshold"]["auc"]
"""

import numpy as np
import scipy.stats


def example_losses(probabilities, targets):
    """Each row's cross-entropy, -log p(target), from class probabilities."""
    probabilities = np.asarray(probabilities, np.float64)
    picked = probabilities[np.arange(len(targets)), np.asarray(targets, int)]
    return -np.log(np.clip(picked, 1e-12, 1.0))


def roc_auc(member_scores, nonmember_scores):
    """The probability that a random member scores above a random
    non-member (ties count half): the Mann-Whitney form of the ROC AUC."""
    ranks = scipy.stats.rankdata(np.concatenate([member_scores, nonmember_scores]))  # Ties take the mean rank.
    members = len(member_scores)
    return float((ranks[:members].sum() - members * (members + 1) / 2) / (members * len(nonmember_scores)))


def tpr_at_fpr(member_scores, nonmember_scores, fpr=0.01):
    """The share of members scoring above the threshold that at most `fpr`
    of the non-members exceed."""
    threshold = np.quantile(nonmember_scores, 1 - fpr, method="higher")
    return float(np.mean(np.asarray(member_scores) > threshold))


def _attack(member_scores, nonmember_scores):
    return {"auc": roc_auc(member_scores, nonmember_scores), "tpr_at_1pct_fpr": tpr_at_fpr(member_scores,
                                                                                           nonmember_scores)}


def membership_audit(member_probabilities, member_targets, nonmember_probabilities, nonmember_targets, seed=0):
    """Both attacks on a classifier's probabilities for its training rows
    (members) and held-out rows (non-members), with as many members as
    non-members (a random subset of the larger side).

    Returns:
        `{"loss_threshold": {auc, tpr_at_1pct_fpr}, "class_calibrated": {...},
        "members": n, "nonmembers": n}`.
    """
    rng = np.random.default_rng(seed)
    member_losses = example_losses(member_probabilities, member_targets)
    nonmember_losses = example_losses(nonmember_probabilities, nonmember_targets)
    member_targets, nonmember_targets = np.asarray(member_targets, int), np.asarray(nonmember_targets, int)
    count = min(len(member_losses), len(nonmember_losses))
    if count < 4:
        raise ValueError(f"The audit needs at least 4 members and 4 non-members, received {len(member_losses)} and "
                         f"{len(nonmember_losses)}.")
    members = rng.permutation(len(member_losses))[:count]
    nonmembers = rng.permutation(len(nonmember_losses))[:count]
    report = {"loss_threshold": _attack(-member_losses[members], -nonmember_losses[nonmembers]),
              "members": int(count), "nonmembers": int(count)}
    reference, scored = nonmembers[:count // 2], nonmembers[count // 2:]
    overall = nonmember_losses[reference].mean()
    means = {label: nonmember_losses[reference][nonmember_targets[reference] == label].mean()
             if np.any(nonmember_targets[reference] == label) else overall for label in np.unique(member_targets)}
    means.update({label: means.get(label, overall) for label in np.unique(nonmember_targets)})

    def calibrated(losses, targets):
        return -(losses - np.array([means[label] for label in targets]))

    kept = members[:len(scored)]
    report["class_calibrated"] = _attack(calibrated(member_losses[kept], member_targets[kept]),
                                         calibrated(nonmember_losses[scored], nonmember_targets[scored]))
    return report
