#!/usr/bin/env bash
# Every figure that needs a GPU, in one short run on a machine with CUDA (about 5 minutes on one H200), as JSON lines:
#   - the train loop's own step in bf16 / fp16 / fp32 for ResNet-50 and ResNeXt-101 (hbp head), batch 32, at 16 and
#     at 64 frames of 112 x 112: clips/s, peak memory, first and last loss (benchmarks/gpu_paths.py);
#   - GPU JPEG decode: nvjpeg decoding + cropping of window rows (`data.decode_on: worker`) against the CPU's
#     decoder on one core, and their pixel difference (benchmarks/gpu_paths.py --windows);
#   - every fusion head's step time and memory against gap, bf16 autocast (benchmarks/model_step.py).
# Run: benchmarks/gpu_check.sh | tee gpu_check.jsonl   (PY=... picks another Python than .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" >&2
windows=$(mktemp --suffix .pkl)
trap 'rm -f "$windows"' EXIT
"$PY" benchmarks/gpu_paths.py --write-windows "$windows"
"$PY" benchmarks/gpu_paths.py --windows "$windows"
"$PY" benchmarks/gpu_paths.py --frames 64
for model in "resnet 50" "resnext 101"; do
    set -- $model
    "$PY" benchmarks/model_step.py --device cuda --amp --arch "$1" --depth "$2" --batch 32 --steps 10 --warmup 3
done
