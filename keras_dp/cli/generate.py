"""`keras-dp generate MODEL_DIR "prompt"`: continue a prompt with a trained LM."""

from __future__ import annotations

import os

from keras_dp.cli._help import Formatter


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="continue a prompt with a model saved by keras-dp train",
        description="Continue PROMPT with a model saved by keras-dp train.",
        formatter_class=Formatter)
    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="an --output-dir of keras-dp train, or a .keras file")
    parser.add_argument("prompt", nargs="?", default="", metavar="PROMPT",
                        help="text to continue (default: none)")
    parser.add_argument("--tokens", "--max-new-tokens", dest="tokens", type=int, default=200,
                        help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--top-k", type=int, default=40, metavar="K",
                        help="sample from the K likeliest tokens; 0: all")
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    parser.add_argument("--seed", type=int, default=None,
                        help="sampling seed (default: a different sample each run)")
    parser.add_argument("--continuation-only", action="store_true",
                        help="print only the generated text, not the prompt")
    parser.set_defaults(func=run)


def load_model(path: str):
    """Loads a saved `TransformerLM` from a model directory or `.keras` file."""
    from keras_dp.errors import ConfigError
    from keras_dp.train import MODEL_FILE

    file = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ConfigError(f"there is no saved model at {file}", variable="MODEL_DIR",
                          received=path, fix="pass the --output-dir of a finished "
                                              "keras-dp train run")
    import keras

    import keras_dp.models  # noqa: F401  (registers the model's classes)

    return keras.saving.load_model(file, compile=False, safe_mode=True)


def run(args) -> int:
    model = load_model(args.model_dir)
    text = model.generate(args.prompt, args.tokens, temperature=args.temperature,
                          top_k=args.top_k or None, greedy=args.greedy, seed=args.seed)
    print(text if args.continuation_only else args.prompt + text)
    return 0
