#!/usr/bin/env bash
# Every figure that needs a GPU, in one short run on a machine with CUDA (a few minutes on one H200), as JSON lines:
#   - bf16 autocast training steps (forward + backward + SGD) and clips/s of ResNet-50 and ResNeXt-101, 16x112x112,
#     batch 32, with the gap and hbp heads (benchmarks/model_step.py);
#   - GPU JPEG decode: nvjpeg decoding + cropping of window rows (`data.decode_on: worker`), beside the CPU data
#     pipeline's figures (benchmarks/data_pipeline.py --worker-device cuda).
# Run: benchmarks/gpu_check.sh | tee gpu_check.jsonl   (PY=... picks another Python than .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" >&2
for model in "resnet 50" "resnext 101"; do
    set -- $model
    "$PY" benchmarks/model_step.py --device cuda --amp --arch "$1" --depth "$2" --batch 32 --steps 10 --warmup 3 \
        --heads gap hbp
done
"$PY" benchmarks/data_pipeline.py --worker-device cuda
