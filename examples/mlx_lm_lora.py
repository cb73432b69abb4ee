"""A LoRA fine-tune with mlx-lm's own trainer, reported through kbert_tui's mlx-lm callback.

    kbert-tui watch -- python examples/mlx_lm_lora.py            # a tiny random llama: nothing to download
    kbert-tui watch -- python examples/mlx_lm_lora.py --model mlx-community/Qwen2.5-0.5B-Instruct-4bit

Without --model the model is a randomly initialised two-layer llama built by mlx-lm's classes, learning to
continue counting sequences; with --model, `mlx_lm.load` fetches that model (and the data stays synthetic).
"""

import argparse

import mlx.optimizers as optim
from mlx_lm.models import llama
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.tuner.utils import linear_to_lora_layers

from kbert_tui.integrations.mlx_lm import Callback


def counting(rows: int, vocab: int) -> list[tuple[list[int], int]]:
    """(tokens, prompt offset) items: each sequence counts up from its first token."""
    return [([(start + i) % vocab for i in range(24)], 0) for start in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="a Hugging Face model mlx_lm.load can fetch (default: a tiny random llama)")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    if args.model:
        from mlx_lm import load

        model, _ = load(args.model)
    else:
        model = llama.Model(llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2,
                                            intermediate_size=128, num_attention_heads=4, rms_norm_eps=1e-5,
                                            vocab_size=128))
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": args.rank, "scale": 10.0, "dropout": 0.0})
    vocab = model.args.vocab_size
    training = TrainingArgs(batch_size=4, iters=args.iters, val_batches=4, steps_per_report=5, steps_per_eval=50,
                            max_seq_length=64, adapter_file="/tmp/kbert-lora-adapters.safetensors")
    with Callback(project="lora", config=vars(args), model=model, total_steps=args.iters) as callback:
        train(model, optim.Adam(learning_rate=1e-3), counting(64, vocab), counting(16, vocab), args=training,
              training_callback=callback)


if __name__ == "__main__":
    main()
