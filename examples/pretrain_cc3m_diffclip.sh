#!/usr/bin/env bash
# DiffCLIP ViT-B/16 on CC3M with the paper's recipe; see examples/pretrain_cc3m.sh for the settings.
# The CLIP baseline of the same comparison: examples/pretrain_cc3m_clip.sh.
exec "$(dirname "$0")/pretrain_cc3m.sh" diffclip_vitb16 "$@"
