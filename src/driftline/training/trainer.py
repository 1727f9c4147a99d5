"""Train one tabular fraud model, with exact resume from checkpoints.

:func:`train_model` fits the :class:`~driftline.training.model.Preprocessor` on the
training split, trains with AdamW on ``BCEWithLogitsLoss`` (positive class weighted,
see :func:`~driftline.training.model.derive_pos_weight`), early-stops on validation
PR-AUC and returns a :class:`TrainedModel` holding the best epoch's weights.

Reproducibility: the initial weights and dropout draw from torch's RNG seeded with
``seed``, and each epoch's batch order is a permutation drawn from a generator seeded
by ``(seed, epoch)`` alone. On CPU, training runs under deterministic algorithms, so a
seed fixes the weights bit for bit. The global RNG states and the deterministic-mode
setting are restored when the call returns. On CUDA, training uses float16 autocast
with a gradient scaler and is reproducible only up to GPU kernel nondeterminism.

Checkpoints: with ``checkpoint_dir``, the whole run state is written to
``checkpoint_dir/checkpoint.pt`` (see :data:`CHECKPOINT_FILE`) every
``checkpoint_every`` optimizer steps and at every epoch end, atomically (temporary file,
fsync, ``os.replace``). It is a ``torch.save`` dict holding: ``format``, ``config``,
``seed``, ``n_train``/``n_valid``, ``preprocessor`` (its dict), ``model``,
``optimizer`` and ``scaler`` state, ``epoch`` (the epoch in progress), ``batch``
(batches of it already done), ``global_step``, ``loss_sum``/``loss_rows`` (the running
training loss of the epoch), ``best_score``, ``best_epoch``, ``best_state``,
``bad_epochs``, ``history`` and ``rng`` (torch CPU, and CUDA when used, generator
states). A later call with the same directory resumes from it, skipping the batches
already done, and ends with exactly the weights of an uninterrupted run on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from driftline.core.atomic import write_atomic
from driftline.core.columns import LABEL
from driftline.training.model import (
    ModelConfig,
    Preprocessor,
    TabularNet,
    build_module,
    derive_pos_weight,
    require_columns,
)

logger = logging.getLogger(__name__)

#: File name of the run checkpoint inside ``checkpoint_dir``.
CHECKPOINT_FILE = "checkpoint.pt"
#: Bumped whenever the checkpoint layout changes.
CHECKPOINT_FORMAT = 1
#: Rows per forward pass when scoring (validation and :meth:`TrainedModel.predict_proba`).
SCORE_BATCH = 8192

OnEpoch = Callable[[int, float], None]


class TrainingInterrupted(RuntimeError):  # noqa: N818 - the name the callers use
    """Raised by ``stop_after_steps`` once the checkpoint of that step is written."""

    def __init__(self, global_step: int):
        """Record the optimizer step the run stopped after."""
        super().__init__(f"training interrupted after global step {global_step}")
        self.global_step = global_step


@dataclass
class TrainedModel:
    """A trained network with its preprocessor, config and training record.

    ``module`` lives on CPU in eval mode. ``history`` holds one dict per epoch
    (``epoch``, ``train_loss``, ``valid_pr_auc``); epochs count from 0.
    """

    config: ModelConfig
    preprocessor: Preprocessor
    module: TabularNet
    history: list[dict[str, Any]]
    best_epoch: int
    best_valid_pr_auc: float
    device_used: str

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the fraud probability of every row of ``frame`` as float64 ``[n]``.

        Rows with identical model inputs get bit-identical scores: each distinct input
        row is scored once and the score is copied to its duplicates (a batched float32
        matmul may otherwise round a row differently depending on its position).

        Raises:
            ValueError: If ``frame`` lacks a model input column.
        """
        numeric, categorical = self.preprocessor.transform(frame)
        inputs = torch.cat([numeric.double(), categorical.double()], dim=1)
        if inputs.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        unique, inverse = torch.unique(inputs, dim=0, return_inverse=True)
        width = numeric.shape[1]
        logits = _logits(
            self.module,
            unique[:, :width].float(),
            unique[:, width:].long(),
            torch.device("cpu"),
        )
        return torch.sigmoid(logits.double())[inverse].numpy()

    def save(self, directory: Path) -> None:
        """Write ``model.pt``, ``config.json``, ``preprocessor.json`` and ``training.json``."""
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), directory / "model.pt")
        _write_json(directory / "config.json", self.config.to_dict())
        _write_json(directory / "preprocessor.json", self.preprocessor.to_dict())
        training = {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_valid_pr_auc": self.best_valid_pr_auc,
            "device_used": self.device_used,
        }
        _write_json(directory / "training.json", training)

    @classmethod
    def load(cls, directory: Path) -> TrainedModel:
        """Load a model written by :meth:`save`; it predicts exactly as the saved one."""
        config = ModelConfig.from_dict(_read_json(directory / "config.json"))
        preprocessor = Preprocessor.from_dict(_read_json(directory / "preprocessor.json"))
        module = build_module(config, preprocessor)
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        training = _read_json(directory / "training.json")
        return cls(
            config=config,
            preprocessor=preprocessor,
            module=module.eval(),
            history=training["history"],
            best_epoch=training["best_epoch"],
            best_valid_pr_auc=training["best_valid_pr_auc"],
            device_used=training["device_used"],
        )


def train_model(
    config: ModelConfig,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    *,
    seed: int,
    device: str = "auto",
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 200,
    on_epoch: OnEpoch | None = None,
    stop_after_steps: int | None = None,
    inputs: Collection[str] | None = None,
) -> TrainedModel:
    """Train a model of ``config`` on ``train``, early-stopping on ``valid`` PR-AUC.

    Args:
        config: Architecture and optimisation settings.
        train: Labelled model frame the preprocessor and weights are fitted on.
        valid: Labelled model frame for early stopping; needs at least one positive.
        seed: Fixes initial weights, dropout and batch order.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or a CUDA device.
        checkpoint_dir: Where to write and resume the run checkpoint; ``None`` for none.
        checkpoint_every: Optimizer steps between checkpoints (epoch ends always write).
        on_epoch: Called as ``on_epoch(epoch, valid_pr_auc)`` after each epoch's
            checkpoint; whatever it raises (an Optuna prune) propagates unchanged.
        stop_after_steps: Once the global optimizer step count (resumed steps included)
            reaches this, write the checkpoint (with ``checkpoint_dir``) and raise
            :class:`TrainingInterrupted`.
            A resumed run already past it stops after its next step.
        inputs: The contract columns the model reads (default: all of ``MODEL_INPUTS``;
            see :meth:`~driftline.training.model.Preprocessor.fit`).

    Returns:
        The model with the weights of its best validation epoch, on CPU.

    Raises:
        ValueError: On missing columns, an empty split, non-binary labels, a validation
            split without positives or a checkpoint from a different run.
        TrainingInterrupted: When ``stop_after_steps`` is reached.
    """
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every must be >= 1")
    target = _resolve_device(device)
    with _reproducible(seed, target):
        run = _Run(config, seed, target, checkpoint_dir, checkpoint_every, inputs)
        run.setup(train, valid)
        run.fit(on_epoch, stop_after_steps)
        return run.result()


def _resolve_device(device: str) -> torch.device:
    """Map ``"auto"`` to CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _reproducible(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and numpy and (on CPU) force deterministic algorithms, then restore."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        np.random.set_state(numpy_state)


def _labels(frame: pd.DataFrame, split: str) -> np.ndarray:
    """Return the 0/1 labels of ``frame`` as float32, validating them."""
    require_columns(frame, extra=(LABEL,))
    if frame.empty:
        raise ValueError(f"{split} split is empty")
    labels = np.asarray(pd.to_numeric(frame[LABEL], errors="coerce"), dtype=np.float64)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"{split} labels must all be 0 or 1")
    return labels.astype(np.float32)


def _epoch_order(n_rows: int, seed: int, epoch: int) -> torch.Tensor:
    """Row permutation of one epoch: a pure function of ``(seed, epoch)``."""
    mixed = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(mixed) % 2**63)
    return torch.randperm(n_rows, generator=generator)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """float16 autocast on CUDA; nothing on CPU (kept float32 and deterministic)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _logits(
    module: nn.Module, numeric: torch.Tensor, categorical: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Score rows in batches without gradients; returns float32 logits on CPU."""
    was_training = module.training
    module.eval()
    parts: list[torch.Tensor] = [torch.empty(0)]
    with torch.inference_mode(), _autocast(device):
        for start in range(0, numeric.shape[0], SCORE_BATCH):
            stop = start + SCORE_BATCH
            out = module(numeric[start:stop].to(device), categorical[start:stop].to(device))
            parts.append(out.float().cpu())
    module.train(was_training)
    return torch.cat(parts)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copy of a module's state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text())


@dataclass
class _Progress:
    """Everything of a run that changes while it trains, besides module and optimizer."""

    epoch: int = 0
    batch: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    loss_rows: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class _Run:
    """One training run: data tensors, module, optimizer, progress and checkpoints."""

    def __init__(
        self,
        config: ModelConfig,
        seed: int,
        device: torch.device,
        checkpoint_dir: Path | None,
        checkpoint_every: int,
        inputs: Collection[str] | None = None,
    ):
        """Store the settings; :meth:`setup` builds everything else."""
        self.inputs = inputs
        self.config = config
        self.seed = seed
        self.device = device
        self.path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir else None
        self.checkpoint_every = checkpoint_every
        self.progress = _Progress()

    def setup(self, train: pd.DataFrame, valid: pd.DataFrame) -> None:
        """Fit (or restore) the preprocessor, build tensors, module and optimizer."""
        y_train, y_valid = _labels(train, "train"), _labels(valid, "valid")
        if not y_valid.any():
            raise ValueError("valid split has no positive label; PR-AUC is undefined")
        self.sizes = {"n_train": len(train), "n_valid": len(valid)}
        saved = self._read_checkpoint()
        self.preprocessor = (
            Preprocessor.from_dict(saved["preprocessor"])
            if saved
            else Preprocessor.fit(train, inputs=self.inputs)
        )
        # Training rows live on the device once; batches are gathered there.
        numeric, categorical = self.preprocessor.transform(train)
        self.x_train = (numeric.to(self.device), categorical.to(self.device))
        self.y_train = torch.from_numpy(y_train).to(self.device)
        self.x_valid = self.preprocessor.transform(valid)
        self.y_valid = y_valid
        self._build(derive_pos_weight(y_train))
        if saved:
            self._restore(saved)

    def _build(self, derived_pos_weight: float) -> None:
        """Create module, loss, optimizer and gradient scaler on the device."""
        self.module = build_module(self.config, self.preprocessor).to(self.device)
        pos_weight = (
            derived_pos_weight if self.config.pos_weight is None else self.config.pos_weight
        )
        self.loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=self.device))
        self.optimizer = torch.optim.AdamW(
            self.module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        logger.info(
            "training %s on %s: %d train rows, pos_weight %.3f",
            self.config.family,
            self.device,
            self.sizes["n_train"],
            pos_weight,
        )

    def fit(self, on_epoch: OnEpoch | None, stop_after_steps: int | None) -> None:
        """Train epochs until ``max_epochs`` or early stopping."""
        self.module.train()
        progress = self.progress
        while progress.epoch < self.config.max_epochs and progress.bad_epochs < (
            self.config.patience
        ):
            epoch = progress.epoch
            self._train_epoch(stop_after_steps)
            score = self._end_epoch()
            if on_epoch is not None:
                on_epoch(epoch, score)

    def _train_epoch(self, stop_after_steps: int | None) -> None:
        """Run the remaining batches of the current epoch."""
        progress = self.progress
        order = _epoch_order(len(self.y_train), self.seed, progress.epoch)
        batches = torch.split(order, self.config.batch_size)
        for rows in batches[progress.batch :]:
            self._step(rows)
            progress.batch += 1
            progress.global_step += 1
            stop = stop_after_steps is not None and progress.global_step >= stop_after_steps
            if stop or progress.global_step % self.checkpoint_every == 0:
                self._write_checkpoint()
            if stop:
                logger.warning("stopping after global step %d", progress.global_step)
                raise TrainingInterrupted(progress.global_step)

    def _step(self, rows: torch.Tensor) -> None:
        """One optimizer step on the training rows ``rows``."""
        rows = rows.to(self.device)
        numeric, categorical, target = (
            self.x_train[0][rows],
            self.x_train[1][rows],
            self.y_train[rows],
        )
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device):
            loss = self.loss(self.module(numeric, categorical).float(), target)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.progress.loss_sum += float(loss.detach()) * len(rows)
        self.progress.loss_rows += len(rows)

    def _end_epoch(self) -> float:
        """Validate, update early stopping and history, move to the next epoch."""
        progress = self.progress
        score = self._validate()
        train_loss = progress.loss_sum / max(progress.loss_rows, 1)
        progress.history.append(
            {"epoch": progress.epoch, "train_loss": train_loss, "valid_pr_auc": score}
        )
        if score > progress.best_score:
            progress.best_score, progress.best_epoch = score, progress.epoch
            progress.best_state = _cpu_state(self.module)
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
        logger.info(
            "epoch %d: train loss %.5f, valid PR-AUC %.5f (best %.5f at epoch %d)",
            progress.epoch,
            train_loss,
            score,
            progress.best_score,
            progress.best_epoch,
        )
        progress.epoch, progress.batch = progress.epoch + 1, 0
        progress.loss_sum, progress.loss_rows = 0.0, 0
        self._write_checkpoint()
        return score

    def _validate(self) -> float:
        """Validation PR-AUC; 0 when the scores are not finite (a diverged run)."""
        scores = _logits(self.module, *self.x_valid, self.device).double().numpy()
        if not np.isfinite(scores).all():
            logger.warning("non-finite validation scores at epoch %d", self.progress.epoch)
            return 0.0
        return float(average_precision_score(self.y_valid, scores))

    def result(self) -> TrainedModel:
        """The trained model with the best epoch's weights, on CPU in eval mode."""
        progress = self.progress
        module = self.module.cpu()
        module.load_state_dict(progress.best_state)
        return TrainedModel(
            config=self.config,
            preprocessor=self.preprocessor,
            module=module.eval(),
            history=list(progress.history),
            best_epoch=progress.best_epoch,
            best_valid_pr_auc=progress.best_score,
            device_used=str(self.device),
        )

    def _rng_state(self) -> dict[str, Any]:
        """Generator states dropout draws from."""
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _write_checkpoint(self) -> None:
        """Atomically write the run state (``write_atomic``: temporary file, fsync, rename)."""
        if self.path is None:
            return
        progress = self.progress
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "seed": self.seed,
            **self.sizes,
            "preprocessor": self.preprocessor.to_dict(),
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self._rng_state(),
            **{name: getattr(progress, name) for name in _Progress.__dataclass_fields__},
        }
        write_atomic(self.path, lambda handle: torch.save(payload, handle), fsync=True)
        logger.debug("checkpoint at epoch %d batch %d", progress.epoch, progress.batch)

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """Load the checkpoint if one exists and belongs to this run."""
        if self.path is None or not self.path.exists():
            return None
        saved = cast(dict[str, Any], torch.load(self.path, map_location="cpu", weights_only=True))
        expected = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "seed": self.seed,
            **self.sizes,
        }
        differing = sorted(k for k, v in expected.items() if saved.get(k) != v)
        if differing:
            raise ValueError(f"checkpoint {self.path} is from another run: {differing} differ")
        return saved

    def _restore(self, saved: dict[str, Any]) -> None:
        """Put module, optimizer, scaler, progress and RNG back to the saved state."""
        self.module.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.progress = _Progress(**{name: saved[name] for name in _Progress.__dataclass_fields__})
        torch.set_rng_state(saved["rng"]["cpu"])
        if self.device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], self.device)
        logger.info(
            "resumed from %s at epoch %d batch %d (global step %d)",
            self.path,
            self.progress.epoch,
            self.progress.batch,
            self.progress.global_step,
        )
