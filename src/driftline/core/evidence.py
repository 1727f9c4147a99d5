"""Evidence for decisions: PR-AUC with bootstrap intervals (one definition each).

With a few dozen labelled frauds a PR-AUC moves by several hundredths from one sample of
days to the next, so no decision rests on a point estimate alone. The intervals here are
percentile intervals of a *stratified* bootstrap: each resample keeps the number of
frauds and of legitimate rows (the quantity that limits the evidence), drawn from a
generator with a fixed seed, so the same data always gives the same interval.

**Clustered frauds.** Fraud is not one row at a time: a card-testing burst is 5-20 rows
on one card within minutes, an account takeover several rows of one account. Resampling
rows treats a burst of 28 rows as 28 independent frauds, so the interval is far too
narrow and ordinary day-to-day variation reads as significant. Every interval therefore
takes optional ``groups`` (one id per row) and then resamples *groups* (a stratified
cluster bootstrap): the groups holding a labelled fraud and the clean groups are drawn
apart, with replacement, each keeping its count, every row of a drawn group coming
along (paired: the same drawn groups for both scorings).

The group callers pass is the fraud *campaign* (:func:`campaigns`, :func:`row_groups`):
the account, ``user_id`` -- a card belongs to one user, so accounts nest the cards
(bursts on one card, an account takeover across the account's cards: the more
conservative choice than ``card_id``, which neither the prediction log nor the
training sets record) -- with the victims of one *compromised merchant* merged into one
group: a compromised merchant's victims are many accounts, scored alike by the
merchant's features (on the scenario matrix's seed-11 no-drift cell the reference day
held 44 merchant-compromise frauds from 2 merchants, ranked almost perfectly, while the
served days' compromised merchants were new; resampling accounts alone left 4 false
drops of 8 days, resampling campaigns none). A merchant is compromised when it has more
defrauded accounts than chance explains (:func:`compromised_merchants`), not merely two:
merging every pair of accounts whose frauds shared any merchant joined independent
takeovers and bust-outs at the busy merchants everyone buys at, so a 2-day window of
110-210 frauds (65-80 accounts) made only 7-14 groups, one of them 40-180 frauds (the
scenario matrix's seed 23), and the interval was a resample of a handful of groups:
half-widths of 0.2-0.3 PR-AUC. With the test the same windows make 13-42 groups, but the
PR-AUC intervals narrow only a little (seed 23's post-onset windows: 90% upper ends
+0.026..+0.065 became +0.037..+0.057): a PR-AUC of 70-140 frauds varies that much from
one window to the next. The ROC-AUC of the same rows varies far less (half-widths
0.05-0.09), which is why the performance check judges both (see
:func:`driftline.monitoring.drift.performance_check`). The number of frauds a
minimum compares with is the distinct *accounts* with a labelled fraud
(:func:`effective_positives` over ``user_id``); an :class:`Estimate` reports the
distinct groups it resampled.

* :func:`average_precision` -- PR-AUC as scikit-learn's ``average_precision_score``
  defines it (step-wise, no interpolation), vectorised over resamples;
* :func:`roc_auc` -- ROC-AUC as ``roc_auc_score`` defines it (ties count half);
* ``metric`` (``"pr_auc"`` or ``"roc_auc"``, :data:`METRICS`) -- which of the two the
  interval functions estimate;
* :func:`pr_auc_interval` -- PR-AUC of one sample and its interval;
* :func:`difference_interval` -- PR-AUC of sample ``a`` minus that of an independent
  sample ``b`` (served days against the reference days);
* :func:`paired_difference_interval` -- PR-AUC of two scorings of the *same* rows
  (candidate against champion), the rows resampled together.
* :func:`effective_positives` -- the independent frauds an estimate rests on;
* :func:`campaigns`, :func:`row_groups` -- the clusters the intervals resample, and
  :func:`fraud_accounts`, the count minimums compare with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Seed of every bootstrap (the same data always gives the same interval).
BOOTSTRAP_SEED = 0
#: Resamples scored per block (bounds the memory of the weight matrix).
_BLOCK = 64
#: Columns whose values make the clusters the intervals resample (module docstring).
USER, MERCHANT = "user_id", "merchant_id"
#: Family-wise level at which a merchant's victims count as one compromise campaign
#: (:func:`compromised_merchants`).
COMPROMISE_LEVEL = 0.01

FloatArray = np.ndarray


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval.

    Attributes:
        value: The estimate on the data as observed (None when it cannot be computed).
        low: Lower end of the interval (None without one).
        high: Upper end of the interval.
        confidence: Two-sided level of the interval (each side holds ``(1 - c) / 2``).
        positives: Effective labelled frauds the estimate rests on (the smaller side for
            a difference): distinct groups with a fraud when ``clustered``, else rows.
        clustered: The bootstrap resampled groups (the cluster bootstrap), not rows.
    """

    value: float | None
    low: float | None
    high: float | None
    confidence: float
    positives: int
    clustered: bool = False

    @property
    def below_zero(self) -> bool:
        """The whole interval lies below zero (significantly negative)."""
        return self.high is not None and self.high < 0.0

    @property
    def above_zero(self) -> bool:
        """The whole interval lies above zero (significantly positive)."""
        return self.low is not None and self.low > 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _Sorted:
    """Labels in descending score order and the last index of each distinct score."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(-scores, kind="mergesort")
        ordered = scores[order]
        self.order = order
        self.labels = labels[order].astype(np.float64)
        self.ends = np.r_[np.flatnonzero(np.diff(ordered) != 0), ordered.size - 1]


def _weighted_ap(data: _Sorted, weights: np.ndarray) -> FloatArray:
    """Average precision per row of ``weights`` (resample counts, in sorted order)."""
    tp = np.cumsum(weights * data.labels, axis=1)[:, data.ends]
    seen = np.cumsum(weights, axis=1)[:, data.ends]
    positives = tp[:, -1]
    gained = np.diff(tp, axis=1, prepend=0.0)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap: FloatArray = (gained * precision).sum(axis=1) / positives
    return ap


def _weighted_roc(data: _Sorted, weights: np.ndarray) -> FloatArray:
    """ROC-AUC per row of ``weights``: the share of (fraud, legitimate) pairs ranked
    right, ties counting half (the trapezoid rule)."""
    tp = np.cumsum(weights * data.labels, axis=1)[:, data.ends]
    fp = np.cumsum(weights * (1.0 - data.labels), axis=1)[:, data.ends]
    gained_tp = np.diff(tp, axis=1, prepend=0.0)
    gained_fp = np.diff(fp, axis=1, prepend=0.0)
    # A fraud is ranked below every legitimate row scored higher, and half below its ties.
    wrong = (gained_tp * (fp - 0.5 * gained_fp)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: FloatArray = 1.0 - wrong / (tp[:, -1] * fp[:, -1])
    return auc


#: The metrics the interval functions estimate, by name.
METRICS = {"pr_auc": _weighted_ap, "roc_auc": _weighted_roc}


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-d arrays of the same length")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """PR-AUC (average precision) of ``scores`` against binary ``labels``.

    Equal to ``sklearn.metrics.average_precision_score``; None without a positive.
    """
    y, s = _check(labels, scores)
    if not y.any():
        return None
    data = _Sorted(y, s)
    return float(_weighted_ap(data, np.ones((1, y.size)))[0])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC (``roc_auc_score``: ties count half), or None without both classes."""
    return _point(labels, scores, "roc_auc")


def _point(labels: np.ndarray, scores: np.ndarray, metric: str) -> float | None:
    """``metric`` of one scoring, or None without both classes."""
    y, s = _check(labels, scores)
    if y.size == 0 or y.sum() in (0, y.size):
        return None
    return float(METRICS[metric](_Sorted(y, s), np.ones((1, y.size)))[0])


def _codes(groups: np.ndarray | None, size: int) -> np.ndarray | None:
    """Group index per row (0..k-1), or None without groups."""
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (size,):
        raise ValueError("groups must hold one id per row")
    if g.dtype == object:
        g = g.astype(str)
    return np.unique(g, return_inverse=True)[1].reshape(-1)


def _fraud_groups(y: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per group: whether it holds a labelled fraud."""
    return np.bincount(codes, weights=y.astype(np.float64)) > 0


def effective_positives(labels: np.ndarray, groups: np.ndarray | None = None) -> int:
    """Distinct groups with a fraud, else fraud rows: 28 card-testing rows on one
    card are one piece of evidence, not 28, and an interval resampling two groups says
    nothing however many rows they hold."""
    y = np.asarray(labels, dtype=np.int64)
    codes = _codes(groups, y.size)
    if codes is None:
        return int(y.sum())
    return int(_fraud_groups(y, codes).sum()) if y.size else 0


def compromised_merchants(
    labels: np.ndarray, users: np.ndarray, merchants: np.ndarray
) -> np.ndarray:
    """Per row: whether its merchant has more defrauded accounts than chance explains.

    A compromised merchant's victims are many accounts defrauded *at that merchant*; a
    busy merchant also sees unrelated frauds of independent accounts (a takeover or a
    bust-out buys where everyone buys). Under chance each account seen at a merchant is
    a victim with the frame's overall rate ``p`` (accounts with a labelled fraud at a
    merchant over the accounts seen there, all merchants pooled), so a merchant with
    ``k`` victims among its ``n`` accounts is compromised when the binomial upper tail
    ``P(X >= k | n, p)`` lies below :data:`COMPROMISE_LEVEL` divided by the merchants
    tested (those with at least two victims: Bonferroni, so chance alone marks a
    merchant in at most 1 frame in 100).
    """
    from scipy.stats import binom

    y = np.asarray(labels, dtype=np.int64)
    user = np.unique(np.asarray(users), return_inverse=True)[1].reshape(-1).astype(np.int64)
    shop = np.unique(np.asarray(merchants), return_inverse=True)[1].reshape(-1).astype(np.int64)
    pairs, pair_of_row = np.unique(shop * (int(user.max()) + 1) + user, return_inverse=True)
    victim = np.bincount(pair_of_row.reshape(-1), weights=y.astype(np.float64)) > 0
    pair_shop = pairs // (int(user.max()) + 1)
    seen = np.bincount(pair_shop, minlength=int(shop.max()) + 1)
    victims = np.bincount(pair_shop, weights=victim, minlength=int(shop.max()) + 1)
    tested = victims >= 2
    if not tested.any():
        return np.zeros(y.size, dtype=bool)
    rate = float(victim.sum()) / float(pairs.size)
    tail = binom.sf(victims - 1, seen, rate)
    compromised: np.ndarray = (tested & (tail < COMPROMISE_LEVEL / int(tested.sum())))[shop]
    return compromised


def campaigns(
    labels: np.ndarray, users: np.ndarray, merchants: np.ndarray | None = None
) -> np.ndarray:
    """Group id per row: its account, the victims of one compromised merchant merged.

    The groups are the connected components of accounts and merchants linked by each
    labelled fraud row at a compromised merchant (:func:`compromised_merchants`);
    legitimate rows link nothing (a busy merchant would otherwise join every account),
    nor do frauds at a merchant whose victims chance explains. Without ``merchants``
    the account itself.
    """
    y = np.asarray(labels, dtype=np.int64)
    user = np.unique(np.asarray(users), return_inverse=True)[1].reshape(-1)
    if merchants is None or not y.any():
        return user
    merchant = np.unique(np.asarray(merchants), return_inverse=True)[1].reshape(-1)
    accounts = int(user.max()) + 1
    parent = list(range(accounts + int(merchant.max()) + 1))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    links = (y == 1) & compromised_merchants(y, user, merchant)
    for account, shop in zip(user[links].tolist(), merchant[links].tolist(), strict=True):
        parent[root(account)] = root(accounts + shop)
    group = np.arange(accounts)
    for account in np.unique(user[links]).tolist():
        group[account] = root(account)
    merged: np.ndarray = group[user]
    return merged


def row_groups(frame: Any, labels: np.ndarray) -> np.ndarray | None:
    """The :func:`campaigns` of a frame's rows (``user_id``, ``merchant_id`` columns).

    None without ``user_id`` (the intervals then resample rows); without
    ``merchant_id``, the accounts alone.
    """
    if not len(frame) or USER not in frame.columns:
        return None
    merchants = frame[MERCHANT].to_numpy() if MERCHANT in frame.columns else None
    return campaigns(labels, frame[USER].to_numpy(), merchants)


def fraud_accounts(frame: Any, labels: np.ndarray) -> int:
    """Distinct accounts with a labelled fraud (fraud rows without ``user_id``).

    The one count every minimum of labelled frauds (``drift_min_positives``) compares
    with: the victims, a burst on one card counted once. Campaigns (a compromised
    merchant's victims) are not merged here: the interval already widens for them, and
    a no-drift day's 40-90 frauds make only 8-15 campaigns, below any usable minimum.
    """
    if len(frame) and USER in frame.columns:
        return effective_positives(labels, frame[USER].to_numpy())
    return int(np.asarray(labels).sum())


def _stratified_weights(
    y: np.ndarray, rng: np.random.Generator, samples: int, codes: np.ndarray | None = None
) -> np.ndarray:
    """Resample counts per row (``samples`` x n), positives and negatives kept apart.

    With group ``codes`` the groups are drawn instead (fraud groups and clean groups
    apart), each row weighted by how often its group was drawn.
    """
    if codes is not None:
        fraud = _fraud_groups(y, codes)
        drawn = np.zeros((samples, fraud.size))
        for stratum in (~fraud, fraud):
            members = np.flatnonzero(stratum)
            if members.size:
                drawn[:, members] = rng.multinomial(
                    members.size, np.full(members.size, 1 / members.size), samples
                )
        weights: np.ndarray = drawn[:, codes]
        return weights
    weights = np.zeros((samples, y.size))
    for cls in (0, 1):
        rows = np.flatnonzero(y == cls)
        if rows.size:
            weights[:, rows] = rng.multinomial(
                rows.size, np.full(rows.size, 1 / rows.size), samples
            )
    return weights


def _resampled_ap(
    y: np.ndarray,
    scorings: list[np.ndarray],
    rng: np.random.Generator,
    samples: int,
    codes: np.ndarray | None = None,
    metric: str = "pr_auc",
) -> list[FloatArray]:
    """``metric`` (average precision unless told) of each scoring of the same rows under
    the same resamples."""
    measure = METRICS[metric]
    sorted_ = [_Sorted(y, s) for s in scorings]
    out: list[list[FloatArray]] = [[] for _ in scorings]
    for start in range(0, samples, _BLOCK):
        weights = _stratified_weights(y, rng, min(_BLOCK, samples - start), codes)
        for index, data in enumerate(sorted_):
            out[index].append(measure(data, weights[:, data.order]))
    return [np.concatenate(parts) for parts in out]


def _interval(values: FloatArray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED if seed is None else seed)


def pr_auc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int | None = None,
    groups: np.ndarray | None = None,
) -> Estimate:
    """PR-AUC of one sample and its stratified (cluster, with ``groups``) bootstrap interval."""
    y, s = _check(labels, scores)
    codes = _codes(groups, y.size)
    positives = effective_positives(y, groups)
    clustered = codes is not None
    value = average_precision(y, s)
    if value is None or y.all():
        return Estimate(value, None, None, confidence, positives, clustered)
    (resampled,) = _resampled_ap(y, [s], _rng(seed), samples, codes)
    return Estimate(value, *_interval(resampled, confidence), confidence, positives, clustered)


def difference_interval(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    *,
    samples: int,
    confidence: float,
    seed: int | None = None,
    groups_a: np.ndarray | None = None,
    groups_b: np.ndarray | None = None,
    metric: str = "pr_auc",
) -> Estimate:
    """PR-AUC (or ``metric``) of sample ``a`` minus that of the independent sample ``b``.

    Each side is ``(labels, scores)``; each is resampled on its own (stratified; by its
    groups when given, see the module docstring). The interval is None when either side
    lacks a class. It is a cluster interval only when both sides carry groups: a side
    without them is resampled by rows (an older reference), which understates that
    side's share of the width.
    """
    ya, sa = _check(*a)
    yb, sb = _check(*b)
    codes_a, codes_b = _codes(groups_a, ya.size), _codes(groups_b, yb.size)
    positives = min(effective_positives(ya, groups_a), effective_positives(yb, groups_b))
    clustered = codes_a is not None and codes_b is not None
    first, second = _point(ya, sa, metric), _point(yb, sb, metric)
    if first is None or second is None or ya.all() or yb.all():
        return Estimate(None, None, None, confidence, positives, clustered)
    rng = _rng(seed)
    (left,) = _resampled_ap(ya, [sa], rng, samples, codes_a, metric)
    (right,) = _resampled_ap(yb, [sb], rng, samples, codes_b, metric)
    low, high = _interval(left - right, confidence)
    return Estimate(first - second, low, high, confidence, positives, clustered)


def paired_difference_interval(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int | None = None,
    groups: np.ndarray | None = None,
) -> Estimate:
    """PR-AUC of scoring ``a`` minus scoring ``b`` of the same rows (paired bootstrap).

    Both scorings see the same resamples: the same rows, or with ``groups`` the same
    drawn groups.
    """
    y, sa = _check(labels, scores_a)
    _, sb = _check(labels, scores_b)
    codes = _codes(groups, y.size)
    positives = effective_positives(y, groups)
    clustered = codes is not None
    first, second = average_precision(y, sa), average_precision(y, sb)
    if first is None or second is None or y.all():
        return Estimate(None, None, None, confidence, positives, clustered)
    left, right = _resampled_ap(y, [sa, sb], _rng(seed), samples, codes)
    low, high = _interval(left - right, confidence)
    return Estimate(first - second, low, high, confidence, positives, clustered)
