"""The training loop: one run from config to final metrics, every step reported as an event.

`Trainer(config, bus, run_id=..., output_dir=...).run()` returns "completed", "failed" or "stopped".
It only emits (through `bus.emit_sync`, safe from any thread) and reads its `Control` between steps.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_unflatten

from kbert_tui.blas import set_threads, verify_binding
from kbert_tui.config import RunConfig, config_to_dict
from kbert_tui.errors import UserInputError
from kbert_tui.events import EventBusError
from kbert_tui.events import catalog as ev
from kbert_tui.policy import BestTracker

from . import checkpoint as ckpt
from .baseline import MODEL_NAME as BASELINE_MODEL, BagOfWords
from .control import Control
from .data import PreparedData, Split, load_data
from .distributed import Ranks
from .model import BertClassifier, FineTunedBert, count_parameters, flat_arrays, grouped_norms
from .pretrained import FineTune
from .steps import (StepResult, _Encoded, accuracy_f1, class_counts, combine, epoch_batches,
                    iterate_batches, log_probabilities, make_batch, select_device, summed_loss, train_step)
from .tokenizer import encode, get_tokenizer


class ThreadEmitter(Protocol):
    """What the trainer needs of a bus: to emit from its own thread (`EventBus.emit_sync`)."""

    def emit_sync(self, event_name: str, data: dict[str, Any] | None = None, *, source: str | None = None,
                  correlation_id: str | None = None, metadata: dict[str, Any] | None = None) -> None: ...


# Model keys a checkpoint need not match: they change no weight (the bag-of-words is refitted from the data).
_NOT_THE_NETWORK = frozenset({"with_bag_of_words"})
# What a checkpoint written before a model key existed was trained with.
_BEFORE_THE_KEY = {"activation": "gelu", "pooling": "cls", "pretrained": None}


class _Stop(Exception):
    """A user stop between steps."""


@dataclass
class _Progress:
    epoch: int = 1  # the epoch being trained (1-based)
    batches_done: int = 0  # batches finished in that epoch
    step: int = 0  # optimizer steps over the whole run


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        bus: ThreadEmitter,
        *,
        run_id: str,
        output_dir: Path,
        control: Control | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.config = config
        self.ranks = ranks or Ranks()
        self._step_seconds = 0.0  # this rank's last step, shared with the others at the next control check
        self._paused_s = 0.0  # the current epoch's time paused (its duration leaves it out, as its rate does)
        self.rank_step_ms: list[float] | None = None  # every rank's last step time (several ranks only)
        self.bus = bus
        self.run_id = run_id
        self.output_dir = Path(output_dir)
        self.control = control or Control()
        self.progress = _Progress()
        es = config.training.early_stopping
        self.best = BestTracker.from_settings(es.metric, es.mode, es.min_delta, es.patience)
        self.failure: dict[str, Any] | None = None
        self._prior: dict[str, np.ndarray] = {}  # the bag-of-words log-probabilities joined to the encoder's
        self._best_weights: tuple[int, list[tuple[str, mx.array]], dict[str, Any]] | None = None
        self.final_metrics: dict[str, Any] | None = None
        self.outcome: str | None = None

    # ------------------------------------------------------------------ events

    def emit(self, name: str, data: dict[str, Any], *, source: str = "trainer", span: str | None = None,
             caused_by: str | None = None, cause_id: str | None = None) -> None:
        """`span` names this event so later ones can say it caused them (`caused_by`), as the bus
        assigns ids the worker never sees; both go in metadata (see kbert_tui.state.threads). `cause_id`
        is the id of an event the worker was handed (a control request)."""
        metadata: dict[str, Any] | None = None
        if span or caused_by or cause_id:
            metadata = {}
            if span:
                metadata["span_id"] = f"{self.run_id}/{span}"
            if caused_by:
                metadata["caused_by"] = f"{self.run_id}/{caused_by}"
            if cause_id:
                metadata["caused_by"] = cause_id
        try:
            self.bus.emit_sync(name, data, source=source, correlation_id=self.run_id, metadata=metadata)
        except EventBusError:
            pass  # the bus was shut down under a run being stopped: the worker finishes quietly

    # ------------------------------------------------------------------ the run

    def run(self) -> str:
        started = time.perf_counter()
        try:
            self.outcome = self._run(started)
        except _Stop:
            self.outcome = "stopped"
        except Exception as error:
            where = f"rank {self.ranks.rank}: " if self.ranks.distributed else ""
            self.failure = {
                "error": where + (str(error) or type(error).__name__),
                "error_type": type(error).__name__,
                "bad_input": isinstance(error, UserInputError),
                "traceback": traceback.format_exc(),
                "epoch": self.progress.epoch,
                "step": self.progress.step,
            }
            self.emit(ev.TRAINING_FAILED, self.failure)
            self.outcome = "failed"
        return self.outcome

    def _run(self, started: float) -> str:
        cfg = self.config
        select_device(cfg.training.device)  # before anything is built: arrays live on the default device
        resume = cfg.training.resume_from
        resume_state = ckpt.read_state(resume) if resume else None
        data = load_data(cfg.data, cfg.run.seed, self.emit,
                         label_names=resume_state["labels"] if resume_state else None)
        base = FineTune.load(cfg) if cfg.model.pretrained is not None else None
        if resume_state is not None:
            tokenizer = ckpt.load_checkpoint_tokenizer(resume)  # type: ignore[arg-type]
        elif base is not None:
            tokenizer = base.tokenizer
        else:
            tokenizer = get_tokenizer(data.train.texts, cfg.model.vocab_size, self.emit)
        self.tokenizer = tokenizer
        self.data = data
        train, val, test = self._encode(data)

        mx.random.seed(cfg.run.seed)
        vocab_size = tokenizer.get_vocab_size()
        model: FineTunedBert | BertClassifier
        if base is not None:
            model = base.classifier(len(data.label_names), cfg.model.dropout)
        else:
            model = BertClassifier(cfg.model, vocab_size, len(data.label_names))
        mx.eval(model.parameters())
        steps_per_epoch = math.ceil(len(train.ids) / cfg.data.batch_size)
        total_steps = steps_per_epoch * cfg.training.epochs
        optimizer = optim.AdamW(learning_rate=self._schedule(total_steps), weight_decay=cfg.training.weight_decay)
        self.model, self.optimizer = model, optimizer
        self.shape = {"vocab_size": vocab_size, "num_labels": len(data.label_names), **config_to_dict(cfg)["model"],
                      **(base.shape() if base is not None else {})}

        if resume_state is not None:
            self._resume(resume, resume_state)  # type: ignore[arg-type]

        set_threads(cfg.training.blas_threads)
        blas = verify_binding()  # says so when MLX still calls its reference BLAS
        self.emit(ev.TRAINING_STARTED, {
            "config": config_to_dict(cfg),
            "run_id": self.run_id,
            "run_name": cfg.run.name,
            "model_type": type(model).__name__,
            "device": mx.default_device().type.name,  # "cpu" or "gpu"
            "num_parameters": count_parameters(model),
            "total_epochs": cfg.training.epochs,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "batch_size": cfg.data.batch_size,
            "blas": blas.as_dict(),
            "labels": data.label_names,
            "output_dir": str(self.output_dir),
            "resumed_from": str(resume) if resume else None,
            # where this process picks the run up: readers drop what an earlier one logged past it
            **({"resumed_at_step": self.progress.step,
                "best": {"metric": self.best.metric, "value": self.best.best, "epoch": self.best.best_epoch}}
               if resume else {}),
        })
        if base is not None and isinstance(model, FineTunedBert):  # always so with a base: the type checker's word
            base.announce(self.emit, model)
        self._bag_of_words(data, val, test)
        if base is not None:  # the frozen layers' outputs, once: each step then runs only the layers that train
            splits = [e for e in (train, val, test) if e is not None]
            for enc, features in zip(splits, base.features([e.ids for e in splits], self.emit), strict=True):
                enc.features = features
        if resume is not None and resume_state is not None:
            self.emit(ev.MODEL_CHECKPOINT_LOADED, {
                "path": str(resume),
                "restored_epoch": resume_state["epoch"] if resume_state["batches_done"] else resume_state["epoch"] - 1,
                "restored_step": resume_state["step"],
            }, source="model")

        # The dropout stream, continued on resume; each rank draws its own.
        mx.random.seed(cfg.run.seed + 1 + self.progress.step + 7919 * self.ranks.rank)
        stopped_early = self._train(train, val, steps_per_epoch)
        restored = self._restore_best()
        final = self.final_metrics or self._evaluate(val)
        predictions = self._predict(test, data) if test is not None and self.ranks.is_main else None
        self.emit(ev.TRAINING_COMPLETED, {
            "final_metrics": final,
            "total_duration": time.perf_counter() - started,
            "epochs_completed": self.progress.epoch - (0 if self.progress.batches_done else 1),
            "total_steps": self.progress.step,
            "stopped_early": stopped_early,
            "best": {"metric": self.best.metric, "value": self.best.best, "epoch": self.best.best_epoch},
            "predictions_path": str(predictions) if predictions else None,
            "output_dir": str(self.output_dir),
            **({"restored_epoch": restored} if restored is not None else {}),
        })
        return "completed"

    # ------------------------------------------------------------------ pieces

    def _encode(self, data: PreparedData) -> tuple[_Encoded, _Encoded, _Encoded | None]:
        splits: list[Split] = [data.train, data.validation] + ([data.test] if data.test else [])
        size = sum(len(s.texts) for s in splits)
        self.emit(ev.DATA_PREPROCESSING_STARTED, {"dataset_size": size}, source="data")
        t0 = time.perf_counter()
        encoded = [
            _Encoded(encode(self.tokenizer, s.texts, self.config.data.max_length),
                     np.asarray(s.labels, dtype=np.int32) if s.labels is not None else None)
            for s in splits
        ]
        lengths = [len(ids) for e in encoded for ids in e.ids]
        self.emit(ev.DATA_PREPROCESSING_COMPLETED, {
            "processed_samples": size,
            "duration": time.perf_counter() - t0,
            "mean_length": float(np.mean(lengths)),
            "truncated": sum(1 for n in lengths if n >= self.config.data.max_length),
            "vocab_size": self.tokenizer.get_vocab_size(),
        }, source="data")
        return encoded[0], encoded[1], encoded[2] if len(encoded) > 2 else None

    def _bag_of_words(self, data: PreparedData, val: _Encoded, test: _Encoded | None) -> None:
        """Fit the bag-of-words model on the training split when the run shows it (`training.baseline`: its
        validation score as data.baseline_computed) or predicts with it (`model.with_bag_of_words`: its
        log-probabilities on validation and test join the encoder's)."""
        cfg = self.config
        show = cfg.training.baseline and self.ranks.is_main
        if not (show or cfg.model.with_bag_of_words):
            return
        t0 = time.perf_counter()
        assert data.train.labels is not None and val.labels is not None
        classes = len(data.label_names)
        bow = BagOfWords(data.train.texts, np.asarray(data.train.labels), classes)
        prior = bow.log_proba(data.validation.texts)
        if cfg.model.with_bag_of_words:
            self._prior["validation"] = prior
            if test is not None and data.test is not None:
                self._prior["test"] = bow.log_proba(data.test.texts)
        if show:
            scores = accuracy_f1(class_counts(val.labels, np.argmax(prior, axis=1), classes), len(val.labels))
            self.emit(ev.DATA_BASELINE_COMPUTED, {"model": BASELINE_MODEL, "val_accuracy": scores["val_accuracy"],
                                                  "val_f1": scores["val_f1"], "features": bow.features,
                                                  "seconds": time.perf_counter() - t0}, source="data")

    def _schedule(self, total_steps: int):
        lr = self.config.training.learning_rate
        warmup = int(round(total_steps * self.config.training.warmup_ratio))
        decay = optim.linear_schedule(lr, lr * 0.01, max(1, total_steps - warmup))
        if warmup <= 0:
            return decay
        return optim.join_schedules([optim.linear_schedule(lr * 0.01, lr, warmup), decay], [warmup])

    def _train(self, train: _Encoded, val: _Encoded, steps_per_epoch: int) -> bool:
        """Epochs of steps from where progress says; True when it ended early (early stopping)."""
        cfg, p = self.config, self.progress

        def loss_fn(m, ids, mask, labels, scale=None):
            if scale is None:
                return nn.losses.cross_entropy(m(ids, mask), labels, reduction="mean")
            return nn.losses.cross_entropy(m(ids, mask), labels, reduction="sum") * scale

        loss_and_grad = nn.value_and_grad(self.model, loss_fn)
        lengths = np.fromiter((len(ids) for ids in train.ids), dtype=np.int64, count=len(train.ids))
        self.model.train()
        while p.epoch <= cfg.training.epochs:
            epoch = p.epoch
            if p.batches_done == 0:
                self.emit(ev.TRAINING_EPOCH_STARTED, {"epoch": epoch, "total_epochs": cfg.training.epochs,
                                                      "steps": steps_per_epoch})
            epoch_start = time.perf_counter()
            self._paused_s = 0.0
            batches = epoch_batches(lengths, cfg.data.batch_size, np.random.default_rng([cfg.run.seed, epoch]),
                                    bucket=cfg.data.length_buckets)
            losses: list[float] = []
            samples, busy = 0, 0.0
            for batch, rows in iterate_batches(batches, p.batches_done):
                if self._check_control():
                    return True
                t0 = time.perf_counter()
                mine = self.ranks.shard(rows)
                # An empty shard (a last batch smaller than the world) still joins the collectives, weighing 0.
                ids, mask, labels = make_batch(train, mine if len(mine) else rows[:1])
                assert labels is not None  # the training split is labelled (data.load refuses it otherwise)
                data_time = time.perf_counter() - t0
                p.step += 1
                self._report_batch_loaded(batch, len(mine), ids, data_time)
                scale = self.ranks.world_size / len(rows) if len(mine) else 0.0
                result = train_step(self.model, self.optimizer, loss_and_grad, ids, mask, labels,
                                    cfg.training.max_grad_norm, f"step {p.step} (epoch {epoch}, batch {batch + 1})",
                                    group=self.ranks.group, scale=scale)
                losses.append(result.loss)
                samples += len(rows)
                busy += result.seconds + data_time
                self._step_seconds = result.seconds
                p.batches_done = batch + 1
                self._report_step(epoch, batch, ids, result, len(rows), data_time)
                every = cfg.training.eval_every
                if every and p.step % every == 0 and p.batches_done < steps_per_epoch:
                    self.emit(ev.TRAINING_EVALUATION_COMPLETED, {"epoch": epoch, "step": p.step,
                                                                 "metrics": self._evaluate(val)})
            busy = float(self.ranks.all_sum([busy])[0]) / self.ranks.world_size  # the ranks' mean: one figure on all
            metrics = {"train_loss": float(np.mean(losses)) if losses else None, **self._evaluate(val),
                       "learning_rate": self.optimizer.learning_rate.item(),
                       "samples_per_sec": samples / busy if busy else None, "steps": p.step}
            self.final_metrics = metrics
            self.emit(ev.TRAINING_EPOCH_COMPLETED, {"epoch": epoch, "metrics": metrics,
                                                    "duration": time.perf_counter() - epoch_start - self._paused_s},
                      span=f"epoch-{epoch}")
            improved = self._track_best(epoch, metrics)
            self._save_for_policy(epoch, metrics, improved)
            p.epoch, p.batches_done = epoch + 1, 0
            if self._early_stop(epoch, improved, metrics):
                return True
        return False

    # ------------------------------------------------------------------ step results as events

    def _report_batch_loaded(self, batch: int, size: int, ids: mx.array, data_time: float) -> None:
        cfg, step = self.config, self.progress.step
        every = cfg.data.batch_event_every
        if every and step % every == 0:
            self.emit(ev.DATA_BATCH_LOADED, {"batch": batch + 1, "step": step, "batch_size": size,
                                             "load_time": data_time, "sequence_length": int(ids.shape[1])},
                      source="data")
        if data_time > cfg.data.load_time_warning_s:
            self.emit(ev.DATA_PERFORMANCE_WARNING, {"component": "data_loader", "metric": "load_time",
                                                    "value": data_time, "threshold": cfg.data.load_time_warning_s},
                      source="data")

    def _report_step(self, epoch: int, batch: int, ids: mx.array, result: StepResult, size: int,
                     data_time: float) -> None:
        step, every = self.progress.step, self.config.events.model_events_every
        if every and step % every == 0:
            self.emit(ev.MODEL_FORWARD_PASS, {"step": step, "input_shape": list(ids.shape),
                                              "output_shape": [int(ids.shape[0]), len(self.data.label_names)]},
                      source="model")
            self.emit(ev.MODEL_BACKWARD_PASS, {"step": step, "loss": result.loss, "gradients": {
                "global_norm": result.grad_norm, "layers": grouped_norms(result.grads)}}, source="model")
        self.emit(ev.TRAINING_BATCH_COMPLETED, {
            "batch": batch + 1, "step": step, "epoch": epoch, "loss": result.loss,
            "metrics": {
                "learning_rate": self.optimizer.learning_rate.item(),
                "grad_norm": result.grad_norm,
                "samples_per_sec": size / max(result.seconds + data_time, 1e-9),
                "step_time_ms": result.seconds * 1000.0,
                **({"rank_step_ms": self.rank_step_ms} if self.rank_step_ms else {}),
                "data_time_ms": data_time * 1000.0,
            },
        })

    def _check_control(self) -> bool:
        """Honour checkpoint/pause/stop between steps; True when the loop should end normally (early stopping)."""
        c, p = self.control, self.progress
        self._save_requested()
        if c.paused and not c.stop_requested:
            self.emit(ev.TRAINING_PAUSED, {"epoch": p.epoch, "step": p.step, "requested_by": c.pause_requested_by})
            paused_at = time.perf_counter()
            c.wait_until_resumed(meanwhile=self._save_requested)
            self._paused_s += time.perf_counter() - paused_at
            if not c.stop_requested:
                self.emit(ev.TRAINING_RESUMED, {"epoch": p.epoch, "step": p.step,
                                               "requested_by": c.resume_requested_by})
        early = c.stop_requested and c.stop_reason == "early_stopping"
        stop = c.stop_requested and not early
        if self.ranks.distributed:  # one rank's stop stops them all, at the same step; step times ride along
            shared = [float(stop), float(early)] + [0.0] * self.ranks.world_size
            shared[2 + self.ranks.rank] = self._step_seconds * 1000.0
            summed = self.ranks.all_sum(shared)
            stop, early = bool(summed[0]), bool(summed[1])
            self.rank_step_ms = [round(float(ms), 3) for ms in summed[2:]]
        if not stop:
            return early
        path = self._save(f"stopped-step-{p.step}", self.final_metrics or {})
        self.emit(ev.TRAINING_STOPPED, {"epoch": p.epoch, "step": p.step, "reason": c.stop_reason or "another rank",
                                       "requested_by": c.requested_by or "another rank",
                                       "checkpoint_path": str(path) if path else None})
        raise _Stop()

    def _save_requested(self) -> None:
        """A checkpoint someone asked for (`k` in the monitor, a rule), in checkpoints/requested-step-N."""
        request = self.control.take_checkpoint_request()
        if request is not None and self.ranks.is_main:
            self._save(f"requested-step-{self.progress.step}", self.final_metrics or {}, cause_id=request[1],
                       requested_by=request[0])

    def _evaluate(self, val: _Encoded) -> dict[str, float]:
        """Validation metrics; with several ranks each predicts its shard and the counts are summed, so every
        rank reports the whole set's numbers in 1/world_size of the time."""
        assert val.labels is not None
        rows = self.ranks.shard(np.arange(len(val.ids)))
        labels = val.labels[rows]
        shard = _Encoded([val.ids[i] for i in rows], labels,
                         [val.features[i] for i in rows] if val.features is not None else None)
        encoder = log_probabilities(self.model, shard, max(self.config.data.batch_size, 64))
        prior = self._prior.get("validation")
        scores = combine(encoder, None if prior is None else prior[rows])
        classes = len(self.data.label_names)
        counts = np.concatenate([[summed_loss(scores, labels), len(rows),
                                  float(np.sum(np.argmax(encoder, axis=1) == labels))],
                                 class_counts(labels, np.argmax(scores, axis=1), classes)])
        counts = self.ranks.all_sum(counts)
        metrics = {"val_loss": float(counts[0] / counts[1]), **accuracy_f1(counts[3:], counts[1])}
        if prior is not None:
            metrics["encoder_val_accuracy"] = float(counts[2] / counts[1])
        return metrics

    def _track_best(self, epoch: int, metrics: dict[str, Any]) -> bool:
        value = metrics.get(self.best.metric)
        better = None if value is None else self.best.observe(value, epoch)
        if better is not None:
            self.emit(ev.TRAINING_NEW_BEST_MODEL, {"epoch": epoch, "step": self.progress.step,
                                                   "metric": better.metric, "value": better.value,
                                                   "previous": better.previous, "mode": better.mode},
                      span=f"best-{epoch}", caused_by=f"epoch-{epoch}")
        if better is not None and self.config.training.restore_best:
            # MLX arrays are immutable and the optimizer replaces them, so holding them is a snapshot.
            self._best_weights = (epoch, flat_arrays(self.model.parameters()), metrics)
        return better is not None

    def _restore_best(self) -> int | None:
        """With `training.restore_best`, go back to the best epoch's weights when a later epoch was worse;
        returns the epoch restored (None when the last epoch was the best, or nothing was tracked). A best
        epoch from before a resume comes back from its `best` checkpoint, when the policy saved one."""
        if not self.config.training.restore_best:
            return None
        last = self.progress.epoch - 1
        if self._best_weights is not None:
            epoch, weights, metrics = self._best_weights
            if epoch == last:
                return None
            self.model.update(tree_unflatten(weights))
            mx.eval(self.model.parameters())
            self.final_metrics = metrics
            return epoch
        best = self.best.best_epoch
        if best is None or best == last or not self.ranks.is_main and self.ranks.distributed:
            return None
        resumed = self.config.training.resume_from
        for folder in [self.output_dir / "checkpoints" / "best"] + ([Path(resumed).parent / "best"] if resumed else []):
            try:
                state = ckpt.read_state(folder)
            except Exception:  # noqa: BLE001 - no such checkpoint, or not one of ours: nothing to restore from
                continue
            if state.get("best_epoch") == best and state.get("run_id") and (folder / "model.safetensors").is_file():
                self.model.load_weights(str(folder / "model.safetensors"), strict=True)
                mx.eval(self.model.parameters())
                self.final_metrics = state.get("metrics") or self.final_metrics
                return best
        return None

    def _early_stop(self, epoch: int, improved: bool, metrics: dict[str, Any]) -> bool:
        if not self.config.training.early_stopping.enabled or improved or not self.best.patience_exhausted:
            return False
        if epoch >= self.config.training.epochs:
            return False
        self.emit(ev.TRAINING_EARLY_STOPPED, self.best.early_stop_payload(epoch, metrics.get(self.best.metric)),
                  caused_by=f"epoch-{epoch}")
        return True

    def _save_for_policy(self, epoch: int, metrics: dict[str, Any], improved: bool) -> None:
        policy = self.config.training.checkpoint
        if policy.policy == "every_epoch":
            self._save(f"epoch-{epoch:03d}", metrics, caused_by=f"best-{epoch}" if improved else f"epoch-{epoch}")
            if policy.keep:
                folders = sorted((self.output_dir / "checkpoints").glob("epoch-[0-9][0-9][0-9]"))
                for old in folders[: -policy.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        elif policy.policy == "best" and improved:
            self._save("best", metrics, caused_by=f"best-{epoch}")
        elif policy.policy == "last":
            self._save("last", metrics, caused_by=f"best-{epoch}" if improved else f"epoch-{epoch}")

    def _save(self, name: str, metrics: dict[str, Any], caused_by: str | None = None, *,
              cause_id: str | None = None, requested_by: str | None = None) -> Path | None:
        """Rank 0 writes the checkpoint (the ranks' weights are the same); other ranks return None."""
        if not self.ranks.is_main:
            return None
        p = self.progress
        folder = self.output_dir / "checkpoints" / name
        state = {
            "run_id": self.run_id, "epoch": p.epoch, "batches_done": p.batches_done, "step": p.step,
            **self.best.state(),
            "labels": self.data.label_names, "model": self.shape, "metrics": metrics,
        }
        size = ckpt.save_checkpoint(folder, self.model, self.optimizer, self.tokenizer,
                                    config_to_dict(self.config), state)
        completed = p.epoch if p.batches_done else p.epoch - 1
        data = {"path": str(folder), "epoch": completed, "step": p.step, "metrics": metrics,
                "kind": name.split("-")[0], "size_mb": size}
        if requested_by is not None:
            data["requested_by"] = requested_by
        self.emit(ev.MODEL_CHECKPOINT_SAVED, data, source="model", caused_by=caused_by, cause_id=cause_id)
        return folder

    def _resume(self, folder: Path, state: dict[str, Any]) -> None:
        mine = {k: v for k, v in self.shape.items() if k not in _NOT_THE_NETWORK}
        theirs = {k: state["model"].get(k, _BEFORE_THE_KEY.get(k)) for k in mine}
        if theirs != mine:
            diff = {k: (theirs[k], mine[k]) for k in mine if theirs[k] != mine[k]}
            raise ckpt.CheckpointError(f"training.resume_from: {folder} holds a model of another shape: "
                             + ", ".join(f"{k} {a} (checkpoint) vs {b} (config)" for k, (a, b) in diff.items()))
        ckpt.restore(folder, self.model, self.optimizer)
        p = self.progress
        p.epoch, p.batches_done, p.step = state["epoch"], state["batches_done"], state["step"]
        self.best.restore(state)
        steps_per_epoch = math.ceil(len(self.data.train.texts) / self.config.data.batch_size)
        if p.batches_done >= steps_per_epoch:
            p.epoch, p.batches_done = p.epoch + 1, 0

    def _predict(self, test: _Encoded, data: PreparedData) -> Path:
        scores = combine(log_probabilities(self.model, test, max(self.config.data.batch_size, 64)),
                         self._prior.get("test"))
        y = np.argmax(scores, axis=1)
        path = self.output_dir / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert data.test is not None
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([data.id_header, data.label_header])
            for row_id, label in zip(data.test.ids, y, strict=True):
                writer.writerow([row_id, data.label_names[int(label)]])
        return path
