"""diffclip-finetune against bad input (issue 23): a rerun killed while it saves never leaves a folder that loads
as a mix of two models; a non-UTF-8 CSV is one line and exit code 2; --skip_bad_rows counts every row it drops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _helpers import cpu_run_flags, save_tiny_diffclip
from PIL import Image

from transformers_diffclip.cli import main as diffclip
from transformers_diffclip.training import cli as training


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune-data")
    rows = []
    for index in range(4):
        name = f"image{index}.png"
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / name)
        rows.append(f"{root / name},a photo number {index}\n")
    (root / "train.csv").write_text("image_path,caption\n" + "".join(rows))
    return root


def _flags(model, data, output_dir, *extra) -> list[str]:
    argv = ["--model_name_or_path", str(model), "--do_train", "--train_file", str(data / "train.csv"), *extra]
    return argv + cpu_run_flags(output_dir, max_steps="1", per_device_train_batch_size="2", logging_strategy="no")


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import transformers.modeling_utils as modeling_utils
    from transformers_diffclip.training import cli
    saving = sys.modules["transformers_diffclip.training.saving"]  # the final save

    where = sys.argv[1]
    if where == "weights":  # killed when the weights file is about to be written
        def save_file(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        modeling_utils.safe_save_file = save_file
    else:  # killed half-way through moving the new files into the output folder
        publish = saving.publish_into
        def publish_into(*args, **kwargs):
            replace = os.replace
            def killing_replace(source, target):
                replace(source, target)
                os.kill(os.getpid(), signal.SIGKILL)
            os.replace = killing_replace
            publish(*args, **kwargs)
        saving.publish_into = publish_into
    cli.main(sys.argv[2:])
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["weights", "moving"])
def test_a_rerun_killed_while_saving_leaves_the_old_model_or_one_that_refuses_to_load(where, data, tmp_path, capsys):
    first = save_tiny_diffclip(tmp_path / "first", seed=0)
    # the second model differs in its config alone (same shapes): its config beside the first's weights would load
    second = save_tiny_diffclip(tmp_path / "second", seed=0)
    config = json.loads((second / "config.json").read_text())
    config["text_config"]["lambda_init"] = 0.2
    config["vision_config"]["lambda_init"] = 0.2
    (second / "config.json").write_text(json.dumps(config))
    output = tmp_path / "out"
    assert training.main(_flags(first, data, output)) == 0
    before = {name: (output / name).read_bytes() for name in ("config.json", "model.safetensors")}

    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", KILLED_RUN, where, *_flags(second, data, output)]
    run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]

    now = {name: (output / name).read_bytes() for name in before if (output / name).exists()}
    if now == before:  # the previous model, intact, loads
        assert (
            diffclip(
                ["zero-shot", "--model", str(output), "--labels", "a,b", "--save-classifier", str(tmp_path / "c")]
            )
            == 0
        )
    else:  # anything else must refuse to load
        assert "config.json" not in now, "a new config.json beside other weights"
        assert diffclip(["zero-shot", "--model", str(output), "--labels", "a,b", str(data / "image0.png")]) == 2
        assert "config.json" in capsys.readouterr().err
    if where == "weights":
        assert now == before
    assert "already holds a model; it stays intact until training ends" in run.stderr  # the rule is said
    # a later run completes and replaces the model whole
    assert training.main(_flags(second, data, output)) == 0
    assert json.loads((output / "config.json").read_text())["text_config"]["lambda_init"] == 0.2
    assert not (output / ".diffclip-saving").exists()


def test_a_non_utf8_csv_is_one_line_and_exit_code_2(data, tmp_path, capsys):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(f"image_path,caption\n{data / 'image0.png'},caf\xe9 cr\xe8me\n".encode("latin-1"))
    argv = _flags(tmp_path / "unused", data, tmp_path / "out")
    argv[argv.index("--train_file") + 1] = str(bad)
    argv[1] = str(save_tiny_diffclip(tmp_path / "model"))
    assert training.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("diffclip-finetune")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert f"--train_file '{bad}' cannot be read as CSV: it is not UTF-8 text (byte 0xe9 near offset" in lines[0]


def test_skip_bad_rows_counts_every_row_it_drops(data, tmp_path, capsys):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((data / "image0.png").read_bytes()[:80])  # a valid header, then nothing
    csv = tmp_path / "train.csv"
    csv.write_text(
        (data / "train.csv").read_text() + f"{truncated},a cut image\n{tmp_path / 'missing.png'},a missing image\n"
    )
    argv = _flags(save_tiny_diffclip(tmp_path / "model"), data, tmp_path / "out", "--skip_bad_rows")
    argv[argv.index("--train_file") + 1] = str(csv)
    assert training.main(argv) == 0
    assert "skipped 2 bad row(s) of the train split" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "train_results.json").read_text())["train_skipped_rows"] == 2


@pytest.mark.parametrize("text", ["learning_rate: [1, 2\n", "- a list\n"])
def test_a_broken_yaml_arguments_file_is_one_line_and_exit_code_2(text, tmp_path, capsys):
    arguments = tmp_path / "args.yaml"
    arguments.write_text(text)
    assert training.main([str(arguments)]) == 2
    err = capsys.readouterr().err
    assert str(arguments) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
