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
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from kbert_tui.blas import set_threads, verify_binding
from kbert_tui.config import RunConfig, config_to_dict

from . import checkpoint as ckpt
from .control import Control
from .data import PreparedData, Split, load_data
from .model import BertClassifier, count_parameters, grouped_norms
from .tokenizer import PAD_ID, encode, get_tokenizer


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


class _Stop(Exception):
    """A user stop between steps."""


@dataclass
class _Encoded:
    ids: list[list[int]]
    labels: np.ndarray | None


@dataclass
class _Progress:
    epoch: int = 1  # the epoch being trained (1-based)
    batches_done: int = 0  # batches finished in that epoch
    step: int = 0  # optimizer steps over the whole run
    best_value: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        bus: Any,
        *,
        run_id: str,
        output_dir: Path,
        control: Control | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.run_id = run_id
        self.output_dir = Path(output_dir)
        self.control = control or Control()
        self.progress = _Progress()
        self.failure: dict[str, Any] | None = None
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
        except Exception:
            pass  # a closed bus must never take the worker down

    # ------------------------------------------------------------------ the run

    def run(self) -> str:
        started = time.perf_counter()
        try:
            self.outcome = self._run(started)
        except _Stop:
            self.outcome = "stopped"
        except Exception as error:
            self.failure = {
                "error": str(error) or type(error).__name__,
                "error_type": type(error).__name__,
                "traceback": traceback.format_exc(),
                "epoch": self.progress.epoch,
                "step": self.progress.step,
            }
            self.emit("training.failed", self.failure)
            self.outcome = "failed"
        return self.outcome

    def _run(self, started: float) -> str:
        cfg = self.config
        resume = cfg.training.resume_from
        resume_state = ckpt.read_state(resume) if resume else None
        data = load_data(cfg.data, cfg.run.seed, self.emit,
                         label_names=resume_state["labels"] if resume_state else None)
        if resume_state is not None:
            tokenizer = ckpt.load_checkpoint_tokenizer(resume)  # type: ignore[arg-type]
        else:
            tokenizer = get_tokenizer(data.train.texts, cfg.model.vocab_size, self.emit)
        self.tokenizer = tokenizer
        self.data = data
        train, val, test = self._encode(data)

        mx.random.seed(cfg.run.seed)
        vocab_size = tokenizer.get_vocab_size()
        model = BertClassifier(cfg.model, vocab_size, len(data.label_names))
        mx.eval(model.parameters())
        steps_per_epoch = math.ceil(len(train.ids) / cfg.data.batch_size)
        total_steps = steps_per_epoch * cfg.training.epochs
        optimizer = optim.AdamW(learning_rate=self._schedule(total_steps), weight_decay=cfg.training.weight_decay)
        self.model, self.optimizer = model, optimizer
        self.shape = {"vocab_size": vocab_size, "num_labels": len(data.label_names), **config_to_dict(cfg)["model"]}

        if resume_state is not None:
            self._resume(resume, resume_state)  # type: ignore[arg-type]

        set_threads(cfg.training.blas_threads)
        blas = verify_binding()  # says so when MLX still calls its reference BLAS
        self.emit("training.started", {
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
        })
        if resume is not None:
            self.emit("model.checkpoint_loaded", {
                "path": str(resume),
                "restored_epoch": resume_state["epoch"] if resume_state["batches_done"] else resume_state["epoch"] - 1,
                "restored_step": resume_state["step"],
            }, source="model")

        mx.random.seed(cfg.run.seed + 1 + self.progress.step)  # dropout stream, continued on resume
        stopped_early = self._train(train, val, steps_per_epoch)
        final = self.final_metrics or self._evaluate(val)
        predictions = self._predict(test, data) if test is not None else None
        self.emit("training.completed", {
            "final_metrics": final,
            "total_duration": time.perf_counter() - started,
            "epochs_completed": self.progress.epoch - (0 if self.progress.batches_done else 1),
            "total_steps": self.progress.step,
            "stopped_early": stopped_early,
            "best": {"metric": cfg.training.early_stopping.metric, "value": self.progress.best_value,
                     "epoch": self.progress.best_epoch},
            "predictions_path": str(predictions) if predictions else None,
            "output_dir": str(self.output_dir),
        })
        return "completed"

    # ------------------------------------------------------------------ pieces

    def _encode(self, data: PreparedData) -> tuple[_Encoded, _Encoded, _Encoded | None]:
        splits: list[Split] = [data.train, data.validation] + ([data.test] if data.test else [])
        size = sum(len(s.texts) for s in splits)
        self.emit("data.preprocessing_started", {"dataset_size": size}, source="data")
        t0 = time.perf_counter()
        encoded = [
            _Encoded(encode(self.tokenizer, s.texts, self.config.data.max_length),
                     np.asarray(s.labels, dtype=np.int32) if s.labels is not None else None)
            for s in splits
        ]
        lengths = [len(ids) for e in encoded for ids in e.ids]
        self.emit("data.preprocessing_completed", {
            "processed_samples": size,
            "duration": time.perf_counter() - t0,
            "mean_length": float(np.mean(lengths)),
            "truncated": sum(1 for n in lengths if n >= self.config.data.max_length),
            "vocab_size": self.tokenizer.get_vocab_size(),
        }, source="data")
        return encoded[0], encoded[1], encoded[2] if len(encoded) > 2 else None

    def _schedule(self, total_steps: int):
        lr = self.config.training.learning_rate
        warmup = int(round(total_steps * self.config.training.warmup_ratio))
        decay = optim.linear_schedule(lr, lr * 0.01, max(1, total_steps - warmup))
        if warmup <= 0:
            return decay
        return optim.join_schedules([optim.linear_schedule(lr * 0.01, lr, warmup), decay], [warmup])

    @staticmethod
    def _batch(enc: _Encoded, rows: np.ndarray) -> tuple[mx.array, mx.array, mx.array | None]:
        length = max(len(enc.ids[i]) for i in rows)
        ids = np.full((len(rows), length), PAD_ID, dtype=np.int32)
        for r, i in enumerate(rows):
            seq = enc.ids[i]
            ids[r, : len(seq)] = seq
        mask = (ids != PAD_ID).astype(np.int32)
        labels = mx.array(enc.labels[rows]) if enc.labels is not None else None
        return mx.array(ids), mx.array(mask), labels

    def _train(self, train: _Encoded, val: _Encoded, steps_per_epoch: int) -> bool:
        cfg = self.config
        model, optimizer = self.model, self.optimizer
        batch_size = cfg.data.batch_size
        clip = cfg.training.max_grad_norm
        every_model = cfg.events.model_events_every
        every_batch = cfg.data.batch_event_every

        def loss_fn(m, ids, mask, labels):
            return nn.losses.cross_entropy(m(ids, mask), labels, reduction="mean")

        loss_and_grad = nn.value_and_grad(model, loss_fn)
        model.train()
        p = self.progress
        while p.epoch <= cfg.training.epochs:
            epoch = p.epoch
            if p.batches_done == 0:
                self.emit("training.epoch_started", {"epoch": epoch, "total_epochs": cfg.training.epochs,
                                                     "steps": steps_per_epoch})
            epoch_start = time.perf_counter()
            order = np.random.default_rng([cfg.run.seed, epoch]).permutation(len(train.ids))
            losses: list[float] = []
            samples, busy = 0, 0.0
            for batch in range(p.batches_done, steps_per_epoch):
                if self._check_control():
                    return True
                t0 = time.perf_counter()
                rows = order[batch * batch_size: (batch + 1) * batch_size]
                ids, mask, labels = self._batch(train, rows)
                data_time = time.perf_counter() - t0
                p.step += 1
                if every_batch and p.step % every_batch == 0:
                    self.emit("data.batch_loaded", {"batch": batch + 1, "step": p.step, "batch_size": len(rows),
                                                    "load_time": data_time, "sequence_length": int(ids.shape[1])},
                              source="data")
                if data_time > cfg.data.load_time_warning_s:
                    self.emit("data.performance_warning", {"component": "data_loader", "metric": "load_time",
                                                           "value": data_time,
                                                           "threshold": cfg.data.load_time_warning_s}, source="data")
                t1 = time.perf_counter()
                loss, grads = loss_and_grad(model, ids, mask, labels)
                if clip > 0:
                    grads, norm = optim.clip_grad_norm(grads, clip)
                else:
                    norm = optim.clip_grad_norm(grads, float("inf"))[1]
                mx.eval(loss, norm)
                loss_value, norm_value = loss.item(), norm.item()
                if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                    what = "loss" if not math.isfinite(loss_value) else "gradient norm"
                    bad = loss_value if what == "loss" else norm_value
                    raise NonFiniteLoss(f"non-finite {what} ({bad}) at step {p.step} (epoch {epoch}, batch {batch + 1})")
                event_step = every_model and p.step % every_model == 0
                if event_step:
                    self.emit("model.forward_pass", {"step": p.step, "input_shape": list(ids.shape),
                                                     "output_shape": [int(ids.shape[0]), len(self.data.label_names)]},
                              source="model")
                    self.emit("model.backward_pass", {"step": p.step, "loss": loss_value, "gradients": {
                        "global_norm": norm_value, "layers": grouped_norms(grads)}}, source="model")
                optimizer.update(model, grads)
                mx.eval(model.parameters(), optimizer.state)
                step_time = time.perf_counter() - t1
                losses.append(loss_value)
                samples += len(rows)
                busy += step_time + data_time
                p.batches_done = batch + 1
                self.emit("training.batch_completed", {
                    "batch": batch + 1, "step": p.step, "epoch": epoch, "loss": loss_value,
                    "metrics": {
                        "learning_rate": optimizer.learning_rate.item(),
                        "grad_norm": norm_value,
                        "samples_per_sec": len(rows) / max(step_time + data_time, 1e-9),
                        "step_time_ms": step_time * 1000.0,
                        "data_time_ms": data_time * 1000.0,
                    },
                })
                if cfg.training.eval_every and p.step % cfg.training.eval_every == 0 and p.batches_done < steps_per_epoch:
                    metrics = self._evaluate(val)
                    self.emit("training.evaluation_completed", {"epoch": epoch, "step": p.step, "metrics": metrics})
            metrics = {"train_loss": float(np.mean(losses)) if losses else None, **self._evaluate(val),
                       "learning_rate": optimizer.learning_rate.item(),
                       "samples_per_sec": samples / busy if busy else None, "steps": p.step}
            self.final_metrics = metrics
            self.emit("training.epoch_completed", {"epoch": epoch, "metrics": metrics,
                                                   "duration": time.perf_counter() - epoch_start},
                      span=f"epoch-{epoch}")
            improved = self._track_best(epoch, metrics)
            self._save_for_policy(epoch, metrics, improved)
            if self._early_stop(epoch, improved):
                p.epoch, p.batches_done = epoch + 1, 0
                return True
            p.epoch, p.batches_done = epoch + 1, 0
        return False

    def _check_control(self) -> bool:
        """Honour checkpoint/pause/stop between steps; True when the loop should end normally (early stopping)."""
        c, p = self.control, self.progress
        self._save_requested()
        if c.paused and not c.stop_requested:
            self.emit("training.paused", {"epoch": p.epoch, "step": p.step, "requested_by": c.pause_requested_by})
            c.wait_until_resumed(meanwhile=self._save_requested)
            if not c.stop_requested:
                self.emit("training.resumed", {"epoch": p.epoch, "step": p.step,
                                               "requested_by": c.resume_requested_by})
        if not c.stop_requested:
            return False
        if c.stop_reason == "early_stopping":
            return True
        path = self._save(f"stopped-step-{p.step}", self.final_metrics or {})
        self.emit("training.stopped", {"epoch": p.epoch, "step": p.step, "reason": c.stop_reason,
                                       "requested_by": c.requested_by, "checkpoint_path": str(path)})
        raise _Stop()

    def _save_requested(self) -> None:
        """A checkpoint someone asked for (`k` in the monitor, a rule), in checkpoints/requested-step-N."""
        request = self.control.take_checkpoint_request()
        if request is not None:
            self._save(f"requested-step-{self.progress.step}", self.final_metrics or {}, cause_id=request[1],
                       requested_by=request[0])

    def _evaluate(self, val: _Encoded) -> dict[str, float]:
        self.model.eval()
        total_loss, preds = 0.0, []
        n = len(val.ids)
        size = max(self.config.data.batch_size, 64)
        for start in range(0, n, size):
            rows = np.arange(start, min(n, start + size))
            ids, mask, labels = self._batch(val, rows)
            logits = self.model(ids, mask)
            loss = nn.losses.cross_entropy(logits, labels, reduction="sum")
            mx.eval(loss, logits)
            total_loss += loss.item()
            preds.append(np.array(mx.argmax(logits, axis=-1)))
        self.model.train()
        y_pred = np.concatenate(preds)
        y_true = val.labels
        assert y_true is not None
        return {"val_loss": total_loss / n, "val_accuracy": float(np.mean(y_pred == y_true)),
                "val_f1": macro_f1(y_true, y_pred)}

    def _track_best(self, epoch: int, metrics: dict[str, Any]) -> bool:
        es, p = self.config.training.early_stopping, self.progress
        value = metrics.get(es.metric)
        if value is None:
            return False
        previous = p.best_value
        if previous is None:
            better = True
        elif es.mode == "min":
            better = value < previous - es.min_delta
        else:
            better = value > previous + es.min_delta
        if better:
            p.best_value, p.best_epoch, p.epochs_without_improvement = value, epoch, 0
            self.emit("training.new_best_model", {"epoch": epoch, "step": p.step, "metric": es.metric,
                                                  "value": value, "previous": previous, "mode": es.mode},
                      span=f"best-{epoch}", caused_by=f"epoch-{epoch}")
        else:
            p.epochs_without_improvement += 1
        return better

    def _early_stop(self, epoch: int, improved: bool) -> bool:
        es, p = self.config.training.early_stopping, self.progress
        if not es.enabled or improved or p.epochs_without_improvement < es.patience:
            return False
        if epoch >= self.config.training.epochs:
            return False
        self.emit("training.early_stopped", {
            "epoch": epoch,
            "reason": f"{es.metric} did not improve by more than {es.min_delta} for {es.patience} epoch(s)",
            "metric": es.metric, "best_value": p.best_value, "best_epoch": p.best_epoch},
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
              cause_id: str | None = None, requested_by: str | None = None) -> Path:
        p = self.progress
        folder = self.output_dir / "checkpoints" / name
        state = {
            "run_id": self.run_id, "epoch": p.epoch, "batches_done": p.batches_done, "step": p.step,
            "best_value": p.best_value, "best_epoch": p.best_epoch,
            "epochs_without_improvement": p.epochs_without_improvement,
            "labels": self.data.label_names, "model": self.shape, "metrics": metrics,
        }
        size = ckpt.save_checkpoint(folder, self.model, self.optimizer, self.tokenizer,
                                    config_to_dict(self.config), state)
        completed = p.epoch if p.batches_done else p.epoch - 1
        data = {"path": str(folder), "epoch": completed, "step": p.step, "metrics": metrics,
                "kind": name.split("-")[0], "size_mb": size}
        if requested_by is not None:
            data["requested_by"] = requested_by
        self.emit("model.checkpoint_saved", data, source="model", caused_by=caused_by, cause_id=cause_id)
        return folder

    def _resume(self, folder: Path, state: dict[str, Any]) -> None:
        theirs = {k: state["model"].get(k) for k in self.shape}
        if theirs != self.shape:
            diff = {k: (theirs[k], self.shape[k]) for k in self.shape if theirs[k] != self.shape[k]}
            raise ValueError(f"training.resume_from: {folder} holds a model of another shape: "
                             + ", ".join(f"{k} {a} (checkpoint) vs {b} (config)" for k, (a, b) in diff.items()))
        ckpt.restore(folder, self.model, self.optimizer)
        p = self.progress
        p.epoch, p.batches_done, p.step = state["epoch"], state["batches_done"], state["step"]
        p.best_value, p.best_epoch = state.get("best_value"), state.get("best_epoch")
        p.epochs_without_improvement = state.get("epochs_without_improvement", 0)
        steps_per_epoch = math.ceil(len(self.data.train.texts) / self.config.data.batch_size)
        if p.batches_done >= steps_per_epoch:
            p.epoch, p.batches_done = p.epoch + 1, 0

    def _predict(self, test: _Encoded, data: PreparedData) -> Path:
        self.model.eval()
        preds = []
        size = max(self.config.data.batch_size, 64)
        for start in range(0, len(test.ids), size):
            ids, mask, _ = self._batch(test, np.arange(start, min(len(test.ids), start + size)))
            logits = self.model(ids, mask)
            preds.append(np.array(mx.argmax(logits, axis=-1)))
        y = np.concatenate(preds) if preds else np.array([], dtype=np.int64)
        path = self.output_dir / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert data.test is not None
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([data.id_header, data.label_header])
            for row_id, label in zip(data.test.ids, y, strict=True):
                writer.writerow([row_id, data.label_names[int(label)]])
        return path


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in either the truth or the predictions."""
    scores = []
    for c in np.union1d(y_true, y_pred):
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        fp = float(np.sum((y_pred == c) & (y_true != c)))
        fn = float(np.sum((y_pred != c) & (y_true == c)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0
