#!/usr/bin/env bash
# The CLIP ViT-B/16 baseline on CC3M, trained exactly as examples/pretrain_cc3m_diffclip.sh trains DiffCLIP.
exec "$(dirname "$0")/pretrain_cc3m.sh" clip_vitb16 "$@"
