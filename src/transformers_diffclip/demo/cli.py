# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`diffclip demo` (placeholder while the page is built)."""


def register_cli(subparsers) -> None:
    pass
