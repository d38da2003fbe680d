"""`launch.py models`: a table of backbone x fusion head with parameters and GFLOPs, to choose a model.

Models are built on PyTorch's meta device (shapes only, no memory, no arithmetic), so the full table of every
backbone and head takes seconds even for ResNet-200. GFLOPs come from `torch.utils.flop_counter` (see
`vidfuse.models.complexity` for what it counts).
"""

from __future__ import annotations

import argparse

import torch

from vidfuse.errors import VidfuseError
from vidfuse.models import build_model, count_gflops, count_parameters, list_heads, list_models
from vidfuse.models.resnet3d import published_shortcut


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Parameters and GFLOPs per clip (batch 1; multiply and add counted separately; the compact head's FFT "
        "is not counted) of every backbone x fusion head. All combinations by default: the models are built "
        "on the meta device, so this takes seconds."
    )
    parser.add_argument("--frames", type=int, default=16, help="clip length in frames (default 16)")
    parser.add_argument("--size", type=int, default=112, help="crop size in pixels (default 112)")
    parser.add_argument("--arch", help="only this backbone family: resnet or resnext (default: all)")
    parser.add_argument("--depth", type=int, help="only this depth (default: all)")
    parser.add_argument("--shortcut", choices=("A", "B"),
                        help="shortcut type (default: as published: A for ResNet-10/18/34, B otherwise)")
    parser.add_argument("--fusion", nargs="+", metavar="HEAD",
                        help=f"heads to list (default: all: {', '.join(list_heads())})")
    parser.add_argument("--layers", nargs="+", default=["layer3", "layer4"], help="blocks the heads read")
    parser.add_argument("--classes", type=int, default=400, help="classes of the classifier (default 400, Kinetics)")


def _backbones(arch: str | None, depth: int | None) -> list[tuple[str, int]]:
    pairs = [(name.split("-")[0], int(name.split("-")[1])) for name in list_models()]
    chosen = [(a, d) for a, d in pairs if arch in (None, a) and depth in (None, d)]
    if not chosen:
        asked = " ".join(f"{flag} {value}" for flag, value in (("--arch", arch), ("--depth", depth)) if value)
        raise VidfuseError(f"no backbone matches {asked}; valid: {', '.join(list_models())}")
    return chosen


def _row(arch: str, depth: int, shortcut: str, fusion: str, args: argparse.Namespace) -> str:
    with torch.device("meta"):
        model = build_model(arch=arch, depth=depth, shortcut=shortcut, num_classes=args.classes, fusion=fusion,
                            fusion_layers=args.layers)
    gflops = count_gflops(model, frames=args.frames, size=args.size)
    name = f"{arch}-{depth}"
    return f"{name:<12} {shortcut:<8} {fusion:<13} {count_parameters(model) / 1e6:>10.2f} {gflops:>8.1f}"


def run(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.size < 1:
        raise VidfuseError(f"--frames {args.frames} and --size {args.size} must be at least 1")
    rows = [
        _row(arch, depth, args.shortcut or published_shortcut(arch, depth), fusion, args)
        for arch, depth in _backbones(args.arch, args.depth)
        for fusion in args.fusion or list_heads()
    ]
    print(f"{'backbone':<12} {'shortcut':<8} {'head':<13} {'params (M)':>10} {'GFLOPs':>8}")
    print("\n".join(rows))
    print(f"GFLOPs per {args.frames}x{args.size}x{args.size} clip; heads read {', '.join(args.layers)} "
          f"with their default dimensions; {args.classes} classes.")
    return 0
