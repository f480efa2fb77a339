#!/usr/bin/env bash
# FeatherFace V2 ← V1 knowledge distillation on WIDER FACE train images (the featherface_v2.widerface_kd recipe).
#
#   bash recipes/featherface_v2_widerface_kd.sh [DATA] [OUT]
#
# DATA holds label.txt (RetinaFace format; boxes only is fine — the teacher supplies landmarks)
# and images/; default ../shared/data/widerface_train1000. Every stage writes OUT/<stage>/ with
# log.jsonl, checkpoints/last.pt (after every epoch), epochs/ (every 2nd epoch's weights, for
# recipes/training_curve.py) and model.safetensors, and resumes when run again. Add --device cuda
# (and a larger --workers) on a GPU; the numbers in docs/training.md were measured with batch 32
# at 640×640, stages 1–3, 6 and 8a/8b on one GPU, stages 4, 5, 7 and the end of 8 on a 2-core CPU.
set -euo pipefail
DATA=${1:-../shared/data/widerface_train1000}
OUT=${2:-runs/featherface_v2_widerface_kd}
TEACHER=${TEACHER:-../shared/weights/featherface_v1_widerface.pth}
COMMON=(--teacher featherface_v1 --teacher-checkpoint "$TEACHER" --student featherface_v2
        --labels "$DATA/label.txt" --images "$DATA/images" --image-size 640 --batch-size 32
        --workers "${WORKERS:-2}" --ema --mixup 0.1 --cutmix 0.1 --dropblock 0.1
        --loss-weight kd_feat=1.0 --temperature 4 --alpha 0.7 --save-every 2)
resume() { [ -f "$1/checkpoints/last.pt" ] && echo --resume || true; }

# Stage 1: the student's MobileNetV1-0.25 body starts from the teacher's (trained on all of WIDER
# FACE train); neck, context modules and heads from scratch. 40 epochs, warm-up 2, peak lr 1e-3.
featherface distill "${COMMON[@]}" --init-body teacher --epochs 40 --lr 1e-3 --warmup-epochs 2 \
    --output "$OUT/stage1" $(resume "$OUT/stage1")

# Stage 2: continue from stage 1 with foreground/background-balanced class distillation.
featherface distill "${COMMON[@]}" --student-checkpoint "$OUT/stage1/model.safetensors" \
    --kd-cls-norm balanced --epochs 14 --lr 5e-4 --warmup-epochs 1 \
    --output "$OUT/stage2" $(resume "$OUT/stage2")

# Stage 3: 51 more epochs from stage 2 (a fresh augmentation stream: seed 3), peak lr 7e-4.
featherface distill "${COMMON[@]}" --student-checkpoint "$OUT/stage2/model.safetensors" \
    --kd-cls-norm balanced --epochs 51 --lr 7e-4 --warmup-epochs 2 --seed 3 \
    --output "$OUT/stage3" $(resume "$OUT/stage3")

# Stage 4: 14 more epochs from stage 3 (seed 4), peak lr 5e-4, with a fifth of the images trained
# whole instead of cropped (--whole-image 0.2): faces as small as the full-size photos hold.
featherface distill "${COMMON[@]}" --student-checkpoint "$OUT/stage3/model.safetensors" \
    --kd-cls-norm balanced --whole-image 0.2 --epochs 14 --lr 5e-4 --warmup-epochs 1 --seed 4 \
    --output "$OUT/stage4" $(resume "$OUT/stage4")

# Stage 5: 12 more epochs from stage 4 (seed 5) with the ground-truth terms face-balanced
# (--face-balance 0.5): the one or two priors of a 10-pixel face weigh more against the dozens of
# a large face.
featherface distill "${COMMON[@]}" --student-checkpoint "$OUT/stage4/model.safetensors" \
    --kd-cls-norm balanced --whole-image 0.2 --face-balance 0.5 --epochs 12 --lr 5e-4 --warmup-epochs 1 \
    --seed 5 --output "$OUT/stage5" $(resume "$OUT/stage5")

# Stage 6: 55 more epochs from stage 5 (seed 7), warm-up 2, with the positives balanced a little
# further (--face-balance 0.75). Measured on one GPU with --workers 14.
featherface distill "${COMMON[@]}" --student-checkpoint "$OUT/stage5/model.safetensors" \
    --kd-cls-norm balanced --whole-image 0.2 --face-balance 0.75 --epochs 55 --lr 5e-4 --warmup-epochs 2 \
    --seed 7 --output "$OUT/stage6" $(resume "$OUT/stage6")

# Stage 7: 6 more epochs from stage 6 (seed 14) at a lower peak rate, with 2% of the images replaced
# by faceless black, dark or one-colour frames (--blank 0.02): the student stops finding faces in
# black frames, at stage 6's accuracy. Measured on the 2-core CPU.
featherface distill "${COMMON[@]}" --student-checkpoint "$OUT/stage6/model.safetensors" \
    --kd-cls-norm balanced --whole-image 0.2 --face-balance 0.75 --blank 0.02 --epochs 6 --lr 3e-4 \
    --warmup-epochs 1 --seed 14 --output "$OUT/stage7" $(resume "$OUT/stage7")

# Stage 8: zoom-out crops. Two runs from stage 7 side by side (46 epochs each, warm-up 2, peak lr
# 5e-4): 8a with SCRFD's crop scales 0.3, 0.4, ..., 2.0 (seed 21), 8b with 0.3-1.0 plus 1.25, 1.5
# and 2.0 (seed 22); their weights averaged; then 4 epochs from the average at a low rate with
# --blank 0.05 (seed 23), which brings the black-frame scores the zoom-out runs raised back down.
# 8a and 8b ran together on one GPU (--workers 7 each), the last part on the 2-core CPU.
SCRFD_SCALES=0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,2.0
STAGE8=("${COMMON[@]}" --kd-cls-norm balanced --whole-image 0.2 --face-balance 0.75)
featherface distill "${STAGE8[@]}" --student-checkpoint "$OUT/stage7/model.safetensors" \
    --blank 0.02 --crop-scales "$SCRFD_SCALES" --epochs 46 --lr 5e-4 --warmup-epochs 2 --seed 21 \
    --output "$OUT/stage8a" $(resume "$OUT/stage8a")
featherface distill "${STAGE8[@]}" --student-checkpoint "$OUT/stage7/model.safetensors" \
    --blank 0.02 --crop-scales 0.3,0.45,0.6,0.8,1.0,1.25,1.5,2.0 --epochs 46 --lr 5e-4 --warmup-epochs 2 \
    --seed 22 --output "$OUT/stage8b" $(resume "$OUT/stage8b")
python "$(dirname "$0")/average_weights.py" "$OUT/stage8ab/model.safetensors" \
    "$OUT/stage8a/model.safetensors" "$OUT/stage8b/model.safetensors"
featherface distill "${STAGE8[@]}" --student-checkpoint "$OUT/stage8ab/model.safetensors" \
    --blank 0.05 --crop-scales "$SCRFD_SCALES" --epochs 4 --lr 2e-4 --warmup-epochs 0.5 --seed 23 \
    --output "$OUT/stage8" $(resume "$OUT/stage8")
