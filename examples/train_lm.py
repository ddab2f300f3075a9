"""Train the Transformer LM data-parallel: the shortest complete keras_dp script.

Build, compile, fit the `tiny` GPT-style LM on the builtin corpus (Python's
documentation, offline), save it, generate text. The same file runs unchanged

    python examples/train_lm.py                      # one process: the CPU, or all local GPUs
    keras-dp launch -n 2 examples/train_lm.py        # two worker processes on this machine
    srun python examples/train_lm.py                 # SLURM, mpirun, a TFJob, Ray, TF_CONFIG...

`keras_dp.scope()` resolves whatever cluster the process runs in, picks the
strategy and enters it; the dataset gives every worker its own shard of each
global batch; only the chief writes the model. `--steps 20 --no-xla` is a quick run.
"""

import argparse
import os

import keras

import keras_dp

parser = argparse.ArgumentParser(description="Train the tiny Transformer LM data-parallel.")
parser.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
parser.add_argument("--batch-size", type=int, default=32, help="sequences per replica")
parser.add_argument("--seq-len", type=int, default=128)
parser.add_argument("--output-dir", default="train_lm_output")
parser.add_argument("--no-xla", action="store_true", help="skip XLA (quicker start, slower steps)")
args = parser.parse_args()
keras.utils.set_random_seed(0)  # the same initial weights in every run, on any number of workers
epochs = max(e for e in range(1, 6) if args.steps % e == 0)  # validate after each epoch

with keras_dp.scope() as ctx:  # resolves the cluster, picks and enters the strategy
    batch = ctx.global_batch(args.batch_size)  # per-replica batch x replicas
    train = keras_dp.data.text_dataset("builtin", seq_len=args.seq_len, global_batch_size=batch)
    val = keras_dp.data.text_dataset("builtin", split="validation", seq_len=args.seq_len,
                                     global_batch_size=batch, shuffle=False, epoch_steps=10)
    model = keras_dp.models.TransformerLM.from_preset("tiny", seq_len=args.seq_len)
    peak = keras_dp.schedules.scaled_learning_rate(5e-3, batch, base_batch=32)  # linear rule
    schedule = keras_dp.schedules.WarmupSchedule(peak, warmup_steps=min(60, args.steps // 10),
                                                 decay_steps=args.steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule),  # loss: next-byte cross-entropy
                  jit_compile=not args.no_xla)
    history = model.fit(
        train, epochs=epochs, steps_per_epoch=args.steps // epochs,
        validation_data=val, validation_steps=10, verbose=2 if ctx.is_chief else 0,
        callbacks=[keras_dp.callbacks.ModelCheckpoint(os.path.join(args.output_dir,
                                                                   "model.keras"))])

if ctx.is_chief:
    print(f"{ctx.describe()}; global batch {batch}")
    print(f"final loss {history.history['loss'][-1]:.6f}, "
          f"validation loss {history.history['val_loss'][-1]:.6f} nats/byte")
    print("The " + model.generate("The ", 200, temperature=0.8, top_k=40, seed=0))
