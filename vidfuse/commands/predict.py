"""`launch.py predict --run RUN_DIR INPUT... [--json FILE] [--checkpoint best|last|PATH]`.

Prints the top-5 classes with their probabilities for each video file or frame folder. An input that does not
decode gives one line naming it on stderr; the others are still predicted, and the exit status is 1 at the end.
"""

from __future__ import annotations

import argparse
import sys

from vidfuse.engine.evaluate import load_run_model
from vidfuse.files import write_json
from vidfuse.predict import predict_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="trained run folder")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video files (PyAV) or frame folders")
    parser.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                        help="weights to use (default: best)")
    parser.add_argument("--json", metavar="FILE", help="also write the predictions as JSON")


def run(args: argparse.Namespace) -> int:
    model, config, labels, checkpoint = load_run_model(args.run, args.checkpoint)
    predictions = []
    for prediction in predict_inputs(model, config, labels, args.inputs):
        predictions.append(prediction)
        if prediction.error:
            print(f"vidfuse: error: {prediction.error}", file=sys.stderr)
            continue
        print(f"{prediction.input}  ({prediction.windows} windows)")
        for name, prob in prediction.top:
            print(f"  {prob:7.2%}  {name}")
    if args.json:
        write_json(args.json, {"run": str(args.run), "checkpoint": str(checkpoint),
                               "predictions": [p.to_dict() for p in predictions]})
        print(f"predictions: {args.json}")
    failed = sum(1 for p in predictions if p.error)
    if failed:
        print(f"vidfuse: {failed} of {len(predictions)} inputs could not be read", file=sys.stderr)
    return 1 if failed else 0
