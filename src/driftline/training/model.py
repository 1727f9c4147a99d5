"""Tabular fraud models: the input preprocessor, the model config and two torch families.

The :class:`Preprocessor` is the one place where a model frame (see
:mod:`driftline.core.columns`) becomes tensors. It is fitted on the training split
only, saved as JSON next to the weights, and applied unchanged by serving, so every
derived input lives here.

Numeric inputs (:data:`~driftline.core.columns.NUMERIC` plus the derived
:data:`DERIVED` columns):

* heavy-tailed columns (training skewness above :data:`SKEW_THRESHOLD`) get a signed
  ``log1p``; the choice is made once, at fit time, and saved;
* every column is standardised with its training mean and standard deviation and
  clipped to ``±``:data:`CLIP`, so a wild value at serving time cannot saturate the net;
* missing values (NaN, None, inf, unparseable) become 0, i.e. the training mean, after
  standardisation, and each contract column gets its own missing indicator (1.0 when
  missing). Feature views expire per entity, so per-column indicators let the model tell
  "no user history" from "no merchant history". Derived columns carry no indicator:
  theirs would repeat the one of the column they derive from.

Categorical inputs get a vocabulary per column built from training values seen at least
``min_count`` times, in sorted order from index 1; index 0 stands for unknown, rare and
missing values, so rare training values teach the model what "unfamiliar" means.

Families (:class:`ModelConfig` ``family``):

* ``mlp``: categorical embeddings concatenated with the numeric inputs, then an MLP;
* ``dcn``: Deep & Cross Network v2 (Wang et al., 2021) in its parallel form: the same
  input vector feeds full-rank cross layers ``x_{l+1} = x_0 * (W x_l + b) + x_l`` and a
  deep MLP side by side; their outputs are concatenated into the final logit layer.
  Cross layers learn the bounded-degree feature crosses fraud rules are made of (large
  amount *and* foreign merchant *and* new device) without the MLP having to find them.

Both output one logit per row.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from driftline.core.columns import CATEGORICAL, MODEL_INPUTS, NUMERIC

#: Numeric inputs derived from contract columns: hour of day on the unit circle, so
#: 23h and 0h are neighbours, and this transaction's amount relative to the user's
#: recent spending (the store features describe the history *before* it).
DERIVED: tuple[str, ...] = (
    "hour_sin",
    "hour_cos",
    "amount_vs_user_mean_7d",
    "amount_vs_user_max_24h",
)
#: Inputs that never decrease when the amount grows (everything else fixed). The
#: networks give them non-negative, context-dependent slopes, so a larger amount can
#: never lower the score: a domain constraint that holds by construction.
AMOUNT_INPUTS: tuple[str, ...] = ("amount", "amount_vs_user_mean_7d", "amount_vs_user_max_24h")
#: Contract columns the :data:`DERIVED` inputs are computed from: an input set must keep them.
DERIVED_FROM: tuple[str, ...] = (
    "hour_of_day",
    "amount",
    "user_amount_mean_7d",
    "user_amount_max_24h",
)
#: Initial bias of the amount slopes: softplus(-3) ~ 0.05, so at initialisation the
#: amount term is small and cannot drown the context while that is being learned.
SLOPE_INIT_BIAS = -3.0
#: Absolute training skewness above which a numeric column is log-transformed.
SKEW_THRESHOLD = 1.0
#: Standardised values are clipped to this many standard deviations.
CLIP = 10.0
#: Bumped whenever the saved preprocessor layout changes.
PREPROCESSOR_VERSION = 2

Family = Literal["mlp", "dcn"]
FAMILIES: tuple[str, ...] = ("mlp", "dcn")


@dataclass(frozen=True)
class NumericStats:
    """How one numeric input is transformed: optional signed log1p, then standardised."""

    name: str
    log: bool
    mean: float
    std: float
    indicator: bool


@dataclass(frozen=True)
class Vocabulary:
    """Category values of one column; ``values[i]`` is encoded as ``i + 1``."""

    name: str
    values: tuple[str, ...]

    @property
    def size(self) -> int:
        """Number of embedding rows needed, the unknown index 0 included."""
        return len(self.values) + 1


@dataclass(frozen=True)
class Preprocessor:
    """Fitted transform from a model frame to ``(numeric float32, categorical int64)``."""

    numeric: tuple[NumericStats, ...]
    categorical: tuple[Vocabulary, ...]

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, *, min_count: int = 5, inputs: Collection[str] | None = None
    ) -> Preprocessor:
        """Fit on a training model frame.

        Args:
            frame: Training rows holding at least every column of ``MODEL_INPUTS``
                (extra columns and any order are fine).
            min_count: Category values seen fewer times map to the unknown index 0.
            inputs: The contract columns the model reads (default: every one of
                ``MODEL_INPUTS``); the others are ignored, e.g. to train a model without
                the fresh features for comparison. The :data:`DERIVED` inputs are always
                kept, so ``inputs`` must hold :data:`DERIVED_FROM`.

        Returns:
            The fitted preprocessor.

        Raises:
            ValueError: If a required column is missing, or ``inputs`` names a column
                outside ``MODEL_INPUTS`` or lacks one of :data:`DERIVED_FROM`.
        """
        require_columns(frame)
        kept = set(MODEL_INPUTS) if inputs is None else _input_set(inputs)
        raw = _numeric_table(frame)
        numeric = tuple(
            _fit_numeric(name, raw[name], indicator=name in NUMERIC)
            for name in raw.columns
            if name in kept or name in DERIVED
        )
        categorical = tuple(
            _fit_vocabulary(name, frame[name], min_count) for name in CATEGORICAL if name in kept
        )
        return cls(numeric=numeric, categorical=categorical)

    @property
    def n_numeric(self) -> int:
        """Width of the numeric tensor (values plus missing indicators)."""
        return len(self.numeric) + sum(s.indicator for s in self.numeric)

    @property
    def amount_columns(self) -> tuple[int, ...]:
        """Positions in the numeric tensor of :data:`AMOUNT_INPUTS` (non-decreasing in amount).

        Each is a signed log1p (monotone) then a standardisation with a positive std and
        a clip (both non-decreasing) of a value that grows with the amount, and a missing
        value maps to a constant, so the tensor value never falls as the amount grows.
        """
        return tuple(i for i, s in enumerate(self.numeric) if s.name in AMOUNT_INPUTS)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Embedding rows per categorical column, in tensor column order."""
        return tuple(v.size for v in self.categorical)

    def transform(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a model frame into model inputs.

        Args:
            frame: Rows holding at least every column of ``MODEL_INPUTS``.

        Returns:
            ``(numeric, categorical)``: float32 ``[n, n_numeric]`` and int64
            ``[n, len(CATEGORICAL)]``.

        Raises:
            ValueError: If a required column is missing.
        """
        require_columns(frame)
        raw = _numeric_table(frame)
        blocks = [_transform_numeric(s, raw[s.name].to_numpy()) for s in self.numeric]
        values = [value for value, _ in blocks]
        flags = [flag for (_, flag), s in zip(blocks, self.numeric, strict=True) if s.indicator]
        numeric = np.stack(values + flags, axis=1) if blocks else np.empty((len(frame), 0))
        codes = [_encode(v, frame[v.name]) for v in self.categorical]
        categorical = np.stack(codes, axis=1) if codes else np.empty((len(frame), 0))
        return (
            torch.from_numpy(numeric.astype(np.float32).reshape(len(frame), -1)),
            torch.from_numpy(categorical.astype(np.int64).reshape(len(frame), -1)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form.

        Columns are lists in tensor order (safe under ``json.dumps(sort_keys=True)``) and
        floats round-trip exactly through JSON.
        """
        return {
            "version": PREPROCESSOR_VERSION,
            "numeric": [asdict(s) for s in self.numeric],
            "categorical": [{"name": v.name, "values": list(v.values)} for v in self.categorical],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Rebuild a preprocessor saved by :meth:`to_dict`.

        Raises:
            ValueError: On an unknown version or a column outside the input contract.
        """
        if data.get("version") != PREPROCESSOR_VERSION:
            raise ValueError(f"unsupported preprocessor version {data.get('version')!r}")
        numeric = tuple(NumericStats(**s) for s in data["numeric"])
        categorical = tuple(Vocabulary(v["name"], tuple(v["values"])) for v in data["categorical"])
        unknown = {s.name for s in numeric} - set(NUMERIC + DERIVED)
        unknown |= {v.name for v in categorical} - set(CATEGORICAL)
        if unknown:
            raise ValueError(f"preprocessor names columns outside the contract: {sorted(unknown)}")
        return cls(numeric=numeric, categorical=categorical)


def _input_set(inputs: Collection[str]) -> set[str]:
    """``inputs`` as a set, checked against the contract and :data:`DERIVED_FROM`."""
    kept = set(inputs)
    unknown = sorted(kept - set(MODEL_INPUTS))
    if unknown:
        raise ValueError(f"inputs outside MODEL_INPUTS: {unknown}")
    needed = [name for name in DERIVED_FROM if name not in kept]
    if needed:
        raise ValueError(f"inputs must keep {needed}: the derived inputs are computed from them")
    return kept


def require_columns(frame: pd.DataFrame, extra: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` naming every input column (or ``extra`` one) ``frame`` lacks."""
    missing = [c for c in (*MODEL_INPUTS, *extra) if c not in frame.columns]
    if missing:
        raise ValueError(f"model frame is missing required columns: {missing}")


def _numeric_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Contract numeric columns as float64 (unparseable and inf -> NaN) plus derived ones."""
    table = pd.DataFrame(
        {c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in NUMERIC},
        index=frame.index,
    )
    table = table.where(np.isfinite(table))
    angle = 2.0 * math.pi * table["hour_of_day"] / 24.0
    table["hour_sin"] = np.sin(angle)
    table["hour_cos"] = np.cos(angle)
    for name, base in (
        ("amount_vs_user_mean_7d", "user_amount_mean_7d"),
        ("amount_vs_user_max_24h", "user_amount_max_24h"),
    ):
        table[name] = table["amount"] / table[base].where(table[base] > 0)
    return table


#: Columns of :func:`numeric_table`, in order.
NUMERIC_TABLE: tuple[str, ...] = NUMERIC + DERIVED


def numeric_table(columns: Mapping[str, Any]) -> np.ndarray:
    """The NumPy twin of the numeric table :meth:`Preprocessor.transform` builds.

    Same arithmetic, in the same order, as ``_numeric_table`` (so the same float64
    bits): contract numeric columns as float64 with non-finite values as NaN, then the
    :data:`DERIVED` columns. Serving calls it on plain column arrays, without pandas.

    Args:
        columns: At least every :data:`~driftline.core.columns.NUMERIC` name -> one
            number per row (NaN or None where missing).

    Returns:
        float64 ``[n, len(NUMERIC_TABLE)]``, columns in :data:`NUMERIC_TABLE` order.
    """
    rows = len(columns[NUMERIC[0]])
    table = np.empty((rows, len(NUMERIC_TABLE)), dtype=np.float64)
    for j, name in enumerate(NUMERIC):
        table[:, j] = columns[name]
    contract = table[:, : len(NUMERIC)]
    contract[~np.isfinite(contract)] = np.nan
    at = {name: j for j, name in enumerate(NUMERIC_TABLE)}
    angle = 2.0 * math.pi * table[:, at["hour_of_day"]] / 24.0
    table[:, at["hour_sin"]] = np.sin(angle)
    table[:, at["hour_cos"]] = np.cos(angle)
    amount = table[:, at["amount"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, base in (
            ("amount_vs_user_mean_7d", "user_amount_mean_7d"),
            ("amount_vs_user_max_24h", "user_amount_max_24h"),
        ):
            values = table[:, at[base]]
            table[:, at[name]] = amount / np.where(values > 0, values, np.nan)
    return table


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: log scale for heavy tails, defined for negatives."""
    return cast(np.ndarray, np.sign(values) * np.log1p(np.abs(values)))


def _fit_numeric(name: str, column: pd.Series, *, indicator: bool) -> NumericStats:
    """Choose the log transform from the skewness and record mean and std after it."""
    skew = column.skew()
    log = bool(np.isfinite(skew) and abs(skew) > SKEW_THRESHOLD)
    values = column.to_numpy()
    values = values[~np.isnan(values)]
    if log:
        values = _signed_log1p(values)
    mean = float(values.mean()) if values.size else 0.0
    std = float(values.std()) if values.size else 1.0
    return NumericStats(name, log, mean, std if std > 1e-12 else 1.0, indicator)


def _transform_numeric(stats: NumericStats, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the standardised, clipped values (NaN -> 0) and the missing flags."""
    missing = np.isnan(values)
    if stats.log:
        values = _signed_log1p(values)
    scaled = np.clip((values - stats.mean) / stats.std, -CLIP, CLIP)
    return np.where(missing, 0.0, scaled), missing.astype(np.float64)


def _fit_vocabulary(name: str, column: pd.Series, min_count: int) -> Vocabulary:
    """Sorted values seen at least ``min_count`` times (missing values never enter)."""
    counts = column.astype("string").dropna().value_counts()
    return Vocabulary(name, tuple(sorted(str(v) for v in counts[counts >= min_count].index)))


def _encode(vocabulary: Vocabulary, column: pd.Series) -> np.ndarray:
    """Codes of ``column`` in ``vocabulary``; unknown and missing values are 0."""
    index = {value: i for i, value in enumerate(vocabulary.values, start=1)}
    codes = column.astype("string").map(index).fillna(0)
    return np.asarray(codes, dtype=np.int64)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimisation hyper-parameters of one model.

    ``pos_weight=None`` derives the positive-class weight of the loss from the training
    labels as ``sqrt(n_negative / n_positive)`` capped at :data:`POS_WEIGHT_CAP` (see
    :func:`derive_pos_weight`). ``cross_layers`` is read by the ``dcn`` family only.
    """

    family: Family = "mlp"
    hidden: tuple[int, ...] = (128, 64)
    embedding_dim: int = 8
    cross_layers: int = 2
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    max_epochs: int = 20
    patience: int = 3
    pos_weight: float | None = None

    def __post_init__(self) -> None:
        """Normalise ``hidden`` to a tuple and reject values no model can train with."""
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        problems = [
            f"family must be one of {FAMILIES}" if self.family not in FAMILIES else "",
            "hidden sizes must be positive" if any(h < 1 for h in self.hidden) else "",
            "embedding_dim must be >= 1" if self.embedding_dim < 1 else "",
            "cross_layers must be >= 0" if self.cross_layers < 0 else "",
            "dropout must be in [0, 1)" if not 0.0 <= self.dropout < 1.0 else "",
            "lr must be > 0" if self.lr <= 0 else "",
            "weight_decay must be >= 0" if self.weight_decay < 0 else "",
            "batch_size must be >= 1" if self.batch_size < 1 else "",
            "max_epochs must be >= 1" if self.max_epochs < 1 else "",
            "patience must be >= 1" if self.patience < 1 else "",
            "pos_weight must be > 0"
            if self.pos_weight is not None and self.pos_weight <= 0
            else "",
        ]
        if any(problems):
            raise ValueError("invalid ModelConfig: " + "; ".join(p for p in problems if p))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form (``hidden`` becomes a list)."""
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        values = dict(data)
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)


#: Upper bound of a derived positive-class weight.
POS_WEIGHT_CAP = 10.0


def derive_pos_weight(labels: np.ndarray) -> float:
    """Positive-class loss weight for 0/1 ``labels``: ``sqrt(neg / pos)``, in ``[1, cap]``.

    The square root rebalances enough for the rare class to shape the early gradients
    while keeping predicted probabilities far less inflated than the full ratio would;
    the cap bounds the loss scale at extreme imbalance. Without positives it is 1.
    """
    positives = float(np.sum(labels == 1))
    negatives = float(labels.size) - positives
    if positives == 0 or negatives == 0:
        return 1.0
    return float(min(max(math.sqrt(negatives / positives), 1.0), POS_WEIGHT_CAP))


class TabularNet(nn.Module):
    """Shared input layer and the monotone amount term.

    The context vector ``x_0`` (embedded categories and every numeric input except the
    amount inputs) feeds the family's network. The amount inputs ``a`` enter only
    through ``sum_k softplus(s_k(h)) * a_k``, where ``h`` is the network's last hidden
    layer: the slope depends on the context (a large amount matters more on a new
    device abroad) but is never negative, so the logit is non-decreasing in the amount.
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: tuple[int, ...],
        embedding_dim: int,
        amount_columns: tuple[int, ...] = (),
    ):
        """Create one embedding table per categorical column and split the numeric inputs."""
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in cardinalities)
        context = [i for i in range(n_numeric) if i not in set(amount_columns)]
        self.register_buffer("context_index", torch.tensor(context, dtype=torch.long), False)
        self.register_buffer("amount_index", torch.tensor(amount_columns, dtype=torch.long), False)
        self.n_amount = len(amount_columns)
        self.input_dim = len(context) + embedding_dim * len(cardinalities)

    def inputs(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Return the context vector ``x_0`` of shape ``[n, input_dim]``."""
        embedded = [table(categorical[:, i]) for i, table in enumerate(self.embeddings)]
        context = numeric.index_select(1, cast(torch.Tensor, self.context_index))
        return torch.cat([context, *embedded], dim=1)

    def make_slopes(self, hidden_dim: int) -> nn.Linear:
        """The slope layer; it starts near zero so the context is learned first."""
        slopes = nn.Linear(hidden_dim, max(self.n_amount, 1))
        nn.init.zeros_(slopes.weight)
        nn.init.constant_(slopes.bias, SLOPE_INIT_BIAS)
        return slopes

    def amount_term(
        self, slopes: nn.Linear, hidden: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        """``sum_k softplus(slope_k(hidden)) * amount_k``, shape ``[n]``."""
        if self.n_amount == 0:
            return torch.zeros(numeric.shape[0], dtype=numeric.dtype, device=numeric.device)
        weights = nn.functional.softplus(slopes(hidden))
        amounts = numeric.index_select(1, cast(torch.Tensor, self.amount_index))
        return (weights * amounts).sum(dim=1)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Return one logit per row, shape ``[n]``."""
        raise NotImplementedError


def _mlp(input_dim: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout blocks (no output layer)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(input_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        input_dim = width
    return nn.Sequential(*layers)


class MLPNet(TabularNet):
    """Embeddings + numeric inputs -> MLP -> logit."""

    def __init__(
        self,
        config: ModelConfig,
        n_numeric: int,
        cardinalities: tuple[int, ...],
        amount_columns: tuple[int, ...] = (),
    ):
        """Build the layers for ``config``."""
        super().__init__(n_numeric, cardinalities, config.embedding_dim, amount_columns)
        self.deep = _mlp(self.input_dim, config.hidden, config.dropout)
        deep_dim = config.hidden[-1] if config.hidden else self.input_dim
        self.head = nn.Linear(deep_dim, 1)
        self.slopes = self.make_slopes(deep_dim)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Return one logit per row, shape ``[n]``."""
        hidden = self.deep(self.inputs(numeric, categorical))
        logit = cast(torch.Tensor, self.head(hidden))[:, 0]
        return logit + self.amount_term(self.slopes, hidden, numeric)


class CrossLayer(nn.Module):
    """DCN-v2 full-rank cross layer: ``x_0 * (W x + b) + x``."""

    def __init__(self, dim: int):
        """Create the ``dim x dim`` weight and bias."""
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Apply one crossing step."""
        return x0 * cast(torch.Tensor, self.linear(x)) + x


class DCNNet(TabularNet):
    """Deep & Cross Network v2, parallel: cross stack and MLP side by side -> logit."""

    def __init__(
        self,
        config: ModelConfig,
        n_numeric: int,
        cardinalities: tuple[int, ...],
        amount_columns: tuple[int, ...] = (),
    ):
        """Build the layers for ``config``."""
        super().__init__(n_numeric, cardinalities, config.embedding_dim, amount_columns)
        self.cross = nn.ModuleList(CrossLayer(self.input_dim) for _ in range(config.cross_layers))
        self.deep = _mlp(self.input_dim, config.hidden, config.dropout)
        deep_dim = config.hidden[-1] if config.hidden else self.input_dim
        self.head = nn.Linear(self.input_dim + deep_dim, 1)
        self.slopes = self.make_slopes(self.input_dim + deep_dim)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Return one logit per row, shape ``[n]``."""
        x0 = self.inputs(numeric, categorical)
        crossed = x0
        for layer in self.cross:
            crossed = layer(x0, crossed)
        joined = torch.cat([crossed, self.deep(x0)], dim=1)
        logit = cast(torch.Tensor, self.head(joined))[:, 0]
        return logit + self.amount_term(self.slopes, joined, numeric)


def build_module(config: ModelConfig, preprocessor: Preprocessor) -> TabularNet:
    """Build the untrained network of ``config.family`` sized for ``preprocessor``.

    The module is called as ``module(numeric, categorical)`` with the tensors of
    :meth:`Preprocessor.transform` and returns one logit per row. Weights are drawn from
    torch's global RNG; seed it first for a reproducible initialisation.
    """
    net = MLPNet if config.family == "mlp" else DCNNet
    return net(
        config, preprocessor.n_numeric, preprocessor.cardinalities, preprocessor.amount_columns
    )
