"""The clip pipeline's Ray Data tasks as Ray Data's executor sees them: in a module that imports nothing heavy.

Ray Data's executor runs in a new actor process for each `streaming_split` (one per dataset of a Train run), which
unpickles the dataset's plan and so imports the module of every function and argument in it. `pipeline`
imports torch and torchvision: 2.5 s of the 2.7 s a new process took to import it, spent on the way to each run's
first batch. So the plan holds these functions and plain-value arguments (`augment` as a dict), and they import
`pipeline` when first called, in the decoder processes, which need it anyway. Measured on a 5-epoch tiny run
(2 workers, 2 cores): 43.2-43.5 s -> 39.6-39.7 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa


def decode_clips(block: pa.Table, *, augment: dict[str, Any], **options: Any) -> Iterator[dict[str, np.ndarray]]:
    """`pipeline.decode_clips`, with `augment` given as the fields of a `transforms.Augment`."""
    from vidfuse.data import pipeline  # torch: imported by the decoders only (see the module docstring)
    from vidfuse.data.transforms import Augment

    yield from pipeline.decode_clips(block, augment=Augment(**augment), **options)


def pick_window_jpegs(block: pa.Table, *, augment: dict[str, Any], **options: Any) -> Iterator[pa.Table]:
    """`pipeline.pick_window_jpegs`, with `augment` given as the fields of a `transforms.Augment`."""
    from vidfuse.data import pipeline  # see decode_clips
    from vidfuse.data.transforms import Augment

    yield from pipeline.pick_window_jpegs(block, augment=Augment(**augment), **options)
