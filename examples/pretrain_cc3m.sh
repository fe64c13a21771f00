#!/usr/bin/env bash
# Pre-train a DiffCLIP variant on CC3M webdataset shards with the paper's recipe (arXiv:2503.06626; the defaults of
# `diffclip-pretrain`: AdamW (0.9, 0.98), eps 1e-8, weight decay 0.5 on matrices, lr 5e-4, 1 warm-up epoch from
# 1e-6, cosine to 1e-5, 40 epochs, global batch 4096, bf16, logit scale clamped to ln 100).
#
#   examples/pretrain_cc3m.sh CONFIG [extra diffclip-pretrain flags]
#
# CONFIG is one of examples/configs/*.json without the extension (diffclip_vitb16, clip_vitb16,
# diffclip_dagger_vitb16, diffclip_star_vitb16). Settings come from the environment:
#   SHARDS       img2dataset output, brace pattern (several joined with ::)   default data/cc3m/{00000..00331}.tar
#   NUM_SAMPLES  image-caption pairs in SHARDS (img2dataset's *_stats.json)   default 2576776
#   GPUS         processes on this machine (the paper: 4 A100s for CC3M)      default 4
#   CHUNK        pairs per forward pass (GradCache); lower it on small GPUs   default 256
#   PROCESSOR    a folder or Hub id with the DiffCLIP processor               default converted/DiffCLIP_ViTB16_CC3M
#   IMAGENET     ImageNet validation images, one folder per class (optional)  default: no zero-shot evaluation
#   LABELS, TEMPLATES  SLIP-style class-name and template JSON files (key "imagenet") for IMAGENET
#   OUTPUT       the run's folder                                             default runs/CONFIG_cc3m
set -euo pipefail
CONFIG=${1:?usage: examples/pretrain_cc3m.sh CONFIG [flags]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
SHARDS=${SHARDS:-"data/cc3m/{00000..00331}.tar"}
NUM_SAMPLES=${NUM_SAMPLES:-2576776}
GPUS=${GPUS:-4}
CHUNK=${CHUNK:-256}
PROCESSOR=${PROCESSOR:-converted/DiffCLIP_ViTB16_CC3M}
OUTPUT=${OUTPUT:-runs/${CONFIG}_cc3m}
STEPS_PER_EPOCH=$((NUM_SAMPLES / 4096))

ZERO_SHOT=()
if [[ -n "${IMAGENET:-}" ]]; then
    ZERO_SHOT=(--zero_shot_eval_dir "$IMAGENET" --zero_shot_key imagenet
               --zero_shot_classnames "${LABELS:?set LABELS}" --zero_shot_templates "${TEMPLATES:?set TEMPLATES}"
               --eval_strategy steps --eval_steps "$STEPS_PER_EPOCH" --per_device_eval_batch_size 256)
fi

torchrun --standalone --nproc_per_node "$GPUS" --no-python diffclip-pretrain \
    --config_name "$HERE/configs/$CONFIG.json" \
    --processor_name "$PROCESSOR" \
    --train_shards "$SHARDS" \
    --train_num_samples "$NUM_SAMPLES" \
    --contrastive_chunk_size "$CHUNK" \
    --dataloader_num_workers 6 \
    --logging_steps 50 \
    --save_strategy steps --save_steps "$STEPS_PER_EPOCH" \
    --output_dir "$OUTPUT" \
    "${ZERO_SHOT[@]}" \
    "$@"
