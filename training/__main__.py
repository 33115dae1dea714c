"""python -m training {generate,train,evaluate,all}: produce the shipped models.

``python -m training all`` (``make models``) is the one command behind ``models/``: it
generates the seeded training crystals, trains, builds the independent test sets
(:mod:`training.holdout`), evaluates and writes the model card. About two hours on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

DEFAULTS = {
    "train_count": 160_000,
    "train_seed": 1,
    "test_count": 1_000,
    "test_seed": 20261125,
    "epochs": 26,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a seeded crystal set to HDF5")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--seed", type=int, required=True)

    t = sub.add_parser("train", help="train the sCDI/pCDI network")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, default=Path("models/cdi_nn.keras"))
    t.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    t.add_argument("--limit", type=int, default=None, help="use only the first N crystals")
    t.add_argument("--validation", type=int, default=5000)
    t.add_argument("--widths", default="16,32,64")
    t.add_argument("--precision", default="auto", help="mixed_bfloat16, float32 or auto")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume-dir", type=Path, default=None,
                   help="keep per-epoch state here; a killed run started again resumes")

    e = sub.add_parser("evaluate", help="metrics, figures and the model card")
    e.add_argument("--model", type=Path, default=Path("models/cdi_nn.keras"))
    e.add_argument("--test", type=Path, default=None, help="test sets (built if missing)")
    e.add_argument("--out", type=Path, default=Path("models"))
    e.add_argument("--train-data", type=Path, default=None, help="for the card's recipe")
    e.add_argument("--cohere", choices=("auto", "yes", "no"), default="auto")

    a = sub.add_parser("all", help="generate, train, evaluate and write the model card")
    a.add_argument("--workdir", type=Path, default=Path("data"))
    a.add_argument("--out", type=Path, default=Path("models"))
    a.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    a.add_argument("--train-count", type=int, default=DEFAULTS["train_count"])
    return p


def _precision(choice: str) -> str:
    if choice != "auto":
        return choice
    from cdistream.inference.device import cpu_has_bfloat16

    return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "generate":
        from .dataset import generate

        generate(args.out, args.count, args.seed)
    elif args.command == "train":
        from .dataset import load
        from .train import TrainConfig, train

        config = TrainConfig(
            epochs=args.epochs,
            validation=args.validation,
            widths=tuple(int(w) for w in args.widths.split(",")),
            precision=_precision(args.precision),
            seed=args.seed,
            resume_dir=None if args.resume_dir is None else str(args.resume_dir),
        )
        train(load(args.data, args.limit), args.out, config)
    elif args.command == "evaluate":
        from .evaluate import evaluate_and_card

        test = args.test or args.out.parent / "data" / _test_name()
        metrics = evaluate_and_card(args.model, test, args.out, args.train_data, args.cohere)
        noise_free = metrics["conditions"]["noise_free"]["nn"]
        summary = {k: v for k, v in noise_free.items() if not k.endswith("bins")}
        print(json.dumps(summary, indent=2))  # noqa: T201
    else:
        run_all(args)


def _test_name() -> str:
    return f"holdout_{DEFAULTS['test_count']}_seed{DEFAULTS['test_seed']}.h5"


def run_all(args: argparse.Namespace) -> None:
    """The whole recipe in one go; every number lands in the model card."""
    from .dataset import generate, load
    from .evaluate import evaluate_and_card
    from .train import TrainConfig, train

    started = time.monotonic()
    train_path = args.workdir / f"crystals_{args.train_count}_seed{DEFAULTS['train_seed']}.h5"
    if not train_path.exists():
        generate(train_path, args.train_count, DEFAULTS["train_seed"])
    model_path = args.out / "cdi_nn.keras"
    config = TrainConfig(
        epochs=args.epochs,
        precision=_precision("auto"),
        resume_dir=str(args.workdir / "train_state"),  # `make models` again resumes a killed run
    )
    train(load(train_path), model_path, config)
    command = f"python -m training all --epochs {args.epochs} --train-count {args.train_count}"
    evaluate_and_card(
        model_path,
        args.workdir / _test_name(),
        args.out,
        train_path,
        "auto",
        command=command,
        started=started,
    )


if __name__ == "__main__":
    main()
