# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The layer every task and command stands on: `loading` (the one model loader, with the trust rule), `images`
(the one image opener), `distributed` (rank and world size), `text_files` (class-name and template files) and
`files` (atomic writes). It imports only the model files and `original`, never a task or a command."""
