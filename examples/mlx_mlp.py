"""A plain MLX training loop (a small MLP on synthetic data), watched with three lines of kbert_tui.

    python examples/mlx_mlp.py                        # a run directory under runs/
    kbert-tui watch -- python examples/mlx_mlp.py     # the same, live in the monitor
    kbert-tui attach                                  # from another terminal: p pauses, s stops

Options: --epochs N, --steps N (per epoch), --delay S (seconds added to each step, to watch it slowly).
"""

import argparse
import time

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

import kbert_tui


class MLP(nn.Module):
    def __init__(self, inputs: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.layers = [nn.Linear(inputs, hidden), nn.Linear(hidden, classes)]

    def __call__(self, x: mx.array) -> mx.array:
        return self.layers[1](nn.relu(self.layers[0](x)))


def loss_fn(model: MLP, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()

    mx.random.seed(0)
    x = mx.random.normal((args.steps * 32 + 256, 16))
    y = (x[:, 0] + x[:, 1] > 0).astype(mx.int32)  # a linearly separable rule the MLP learns quickly
    x_train, y_train, x_val, y_val = x[256:], y[256:], x[:256], y[:256]
    model = MLP(16, 32, 2)
    optimizer = optim.SGD(learning_rate=0.1)
    loss_and_grad = nn.value_and_grad(model, loss_fn)

    run = kbert_tui.init(project="mlx-mlp", config=vars(args), model=model,
                         total_epochs=args.epochs, steps_per_epoch=args.steps, batch_size=32)
    with run:  # an exception ends the run as training.failed
        step = 0
        for epoch in range(1, args.epochs + 1):
            for batch in range(args.steps):
                xb, yb = x_train[batch * 32:(batch + 1) * 32], y_train[batch * 32:(batch + 1) * 32]
                loss, grads = loss_and_grad(model, xb, yb)
                optimizer.update(model, grads)
                mx.eval(model.parameters(), optimizer.state)
                step += 1
                run.log({"loss": loss, "learning_rate": optimizer.learning_rate}, step=step)  # waits while paused
                if run.should_stop:  # the monitor, attach or a rule asked to stop
                    print(f"stop requested at step {step}", flush=True)
                    return
                time.sleep(args.delay)
            accuracy = mx.mean(mx.argmax(model(x_val), axis=1) == y_val)
            run.log({"val_loss": loss_fn(model, x_val, y_val), "val_accuracy": accuracy}, epoch=epoch)
            print(f"epoch {epoch}: val_accuracy {accuracy.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
