# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`python -m transformers_diffclip.training` (what torchrun and accelerate run): `diffclip-finetune`."""

import sys

from .cli import main


sys.exit(main())
