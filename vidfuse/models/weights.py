"""Load pretrained weights into a `Recognizer`: 3D-ResNets-PyTorch checkpoints, bare state dicts, vidfuse runs.

3D-ResNets-PyTorch saves `{'epoch', 'arch', 'state_dict', 'optimizer'}` with the `module.` prefix of
`nn.DataParallel` and the backbone keys at top level (`conv1.weight`, `layer1.0.conv1.weight`, `fc.weight`);
here those map onto `backbone.*` and the head's classifier `head.fc.*`. The backbone must match exactly
(otherwise: `VidfuseError` naming the missing / unexpected keys and the file); head parameters load where name
and shape agree, and the rest start fresh: a different class count (the old `--n_finetune_classes`) or another
fusion head keeps the backbone and starts a new classifier, said in one printed line. The classifier is kept
only when the whole head loaded, since otherwise it would read features it was not trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from vidfuse.engine.checkpoint import load_checkpoint
from vidfuse.errors import VidfuseError
from vidfuse.models.recognizer import Recognizer

CLASSIFIER = "head.fc.weight"


@dataclass
class LoadResult:
    """What `load_pretrained` did: how many tensors it loaded, and which keys it did not use on either side."""

    loaded: int
    missing: list[str] = field(default_factory=list)  # model keys left as initialised
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys not used
    new_classifier: bool = False


def _abbreviate(keys: list[str], shown: int = 4) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _recognizer_key(key: str) -> str:
    """A 3D-ResNets-PyTorch key (after `module.`) -> the recognizer's key; vidfuse keys pass through."""
    if key.startswith(("backbone.", "head.")):
        return key
    return "head." + key if key.startswith("fc.") else "backbone." + key


def checkpoint_state(raw: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict inside any accepted checkpoint layout, with recognizer key names."""
    if isinstance(raw, dict) and "vidfuse_version" in raw and isinstance(raw.get("model"), dict):
        state = raw["model"]
    elif isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        state = raw["state_dict"]
    elif isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state = raw
    else:
        raise VidfuseError(f"{path}: not a model checkpoint (expected a state dict, a 3D-ResNets-PyTorch "
                           "checkpoint with 'state_dict', or a vidfuse checkpoint with 'model')")
    return {_recognizer_key(key.removeprefix("module.")): value for key, value in state.items()}


def _backbone_mismatch(model_state: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    """Problems that make the checkpoint another backbone architecture (one string each, empty if none)."""
    expected = {k for k in model_state if k.startswith("backbone.")}
    given = {k for k in state if k.startswith("backbone.")}
    # Checkpoints from PyTorch < 0.4 have no BatchNorm `num_batches_tracked`; it plays no role at inference.
    missing = sorted(k for k in expected - given if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given - expected)
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(model_state[k].shape)}"
              for k in sorted(expected & given) if state[k].shape != model_state[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_abbreviate(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_abbreviate(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_abbreviate(shapes)}")
    return problems


def load_pretrained(model: Recognizer, path: str | os.PathLike) -> LoadResult:
    """Load the backbone (must match) and whatever of the head fits from the checkpoint at `path`."""
    state = checkpoint_state(load_checkpoint(path), path)
    model_state = model.state_dict()
    problems = _backbone_mismatch(model_state, state)
    if problems:
        raise VidfuseError(f"{path}: checkpoint does not fit this backbone: {'; '.join(problems)}")
    usable = {k: v for k, v in state.items() if k in model_state and v.shape == model_state[k].shape}
    if any(k.startswith("head.") and k not in usable and not k.startswith("head.fc.") for k in model_state):
        # The rest of the head starts fresh, so an old classifier would read features it was not trained on.
        usable = {k: v for k, v in usable.items() if not k.startswith("head.fc.")}
    model.load_state_dict(usable, strict=False)
    result = LoadResult(
        loaded=len(usable),
        missing=sorted(set(model_state) - set(usable)),
        unexpected=sorted(set(state) - set(usable)),
        new_classifier=CLASSIFIER not in usable,
    )
    if result.new_classifier:
        print(f"vidfuse: {path}: backbone loaded; {_new_classifier_reason(state, model_state)}")
    return result


def _new_classifier_reason(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> str:
    target = model_state[CLASSIFIER].shape
    if CLASSIFIER not in state:
        return f"new classifier for {target[0]} classes (the checkpoint has none)"
    source = state[CLASSIFIER].shape
    if source[0] != target[0]:
        return f"new classifier for {target[0]} classes (the checkpoint has {source[0]})"
    return "new fusion head and classifier (the checkpoint was trained with another head)"
