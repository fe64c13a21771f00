"""Test-wide settings: no network, ever (models and tokenizers are built locally); the independent reference of the
original model (conversion/reference_original.py, shared with the converter's --verify) importable as
`reference_original` from every test folder."""

import os
import sys
from pathlib import Path


_CONVERSION = str(Path(__file__).resolve().parents[1] / "conversion")
if _CONVERSION not in sys.path:
    sys.path.insert(0, _CONVERSION)


os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
