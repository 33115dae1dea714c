"""python -m training {generate,train,evaluate,all}: produce the shipped models.

``python -m training all`` is the one command behind ``models/``: it generates the seeded
training and test sets, trains, evaluates and writes the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

DEFAULTS = {
    "train_count": 125_000,
    "train_seed": 1,
    "test_count": 1_000,
    "test_seed": 2,
    "epochs": 16,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a seeded dataset to HDF5")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--seed", type=int, required=True)

    t = sub.add_parser("train", help="train the sCDI/pCDI network")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, default=Path("models/cdi_nn.keras"))
    t.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    t.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    t.add_argument("--validation", type=int, default=5000)
    t.add_argument("--widths", default="16,32,64")
    t.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("evaluate", help="metrics JSON and figures on a test set")
    e.add_argument("--model", type=Path, default=Path("models/cdi_nn.keras"))
    e.add_argument("--test", type=Path, required=True)
    e.add_argument("--out", type=Path, default=Path("models"))

    a = sub.add_parser("all", help="generate, train, evaluate and write the model card")
    a.add_argument("--workdir", type=Path, default=Path("data"))
    a.add_argument("--out", type=Path, default=Path("models"))
    a.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    a.add_argument("--train-count", type=int, default=DEFAULTS["train_count"])
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .dataset import generate, load  # after logging: these import TensorFlow lazily

    if args.command == "generate":
        generate(args.out, args.count, args.seed)
    elif args.command == "train":
        from .train import TrainConfig, train

        config = TrainConfig(
            epochs=args.epochs,
            validation=args.validation,
            widths=tuple(int(w) for w in args.widths.split(",")),
            seed=args.seed,
        )
        train(load(args.data, args.limit), args.out, config)
    elif args.command == "evaluate":
        from .evaluate import evaluate

        print(json.dumps(evaluate(args.model, load(args.test), args.out), indent=2))  # noqa: T201
    else:
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    """The whole recipe in one go; every number lands in the model card."""
    from .card import write_card
    from .dataset import generate, load
    from .evaluate import evaluate
    from .train import TrainConfig, train

    started = time.monotonic()
    train_path = args.workdir / f"train_{args.train_count}_seed{DEFAULTS['train_seed']}.h5"
    test_path = args.workdir / f"test_{DEFAULTS['test_count']}_seed{DEFAULTS['test_seed']}.h5"
    if not train_path.exists():
        generate(train_path, args.train_count, DEFAULTS["train_seed"])
    if not test_path.exists():
        generate(test_path, DEFAULTS["test_count"], DEFAULTS["test_seed"])
    model_path = args.out / "cdi_nn.keras"
    train(load(train_path), model_path, TrainConfig(epochs=args.epochs))
    metrics = evaluate(model_path, load(test_path), args.out)
    command = f"python -m training all --epochs {args.epochs} --train-count {args.train_count}"
    write_card(args.out, command, train_path, test_path, metrics, time.monotonic() - started)


if __name__ == "__main__":
    main()
