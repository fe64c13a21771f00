# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Streamed webdataset shards (the layout img2dataset writes: `KEY.jpg|jpeg|png|webp`, `KEY.txt`, optional
`KEY.json`) for training and evaluation, read with `webdataset`.

An epoch of a training stream is `--train_num_samples` samples. Each epoch the shard list is shuffled with a seeded
generator and dealt out: shard `i` of the shuffled list goes to process `i mod P`, and within a process to data-loader
worker `(i div P) mod W` (the split of webdataset's `split_by_node`, then `split_by_worker`). Each worker streams its
shards through a seeded sample-shuffle buffer (raw bytes: nothing is decoded before it leaves the buffer), decodes
and augments the samples and collates them into batches. Nothing is read before training starts, and no process
reads another's shards.

Every process must run the same number of steps, so each gets `B = train_num_samples // P // (batch × GA) × GA`
batches per epoch, dealt round-robin to its workers as torch's `DataLoader` collects them. Each sample is used exactly
once per epoch when every worker's shards hold exactly its share of batches (equal shards, their number a multiple
of P × W, `--train_num_samples` their total and a multiple of the global batch × GA). Otherwise a worker whose
shards hold more stops at its share (the rest is not used that epoch; the next epoch deals the shards differently),
and one whose shards hold fewer goes through them again, reshuffled (`train_repeated_samples` counts those).

A sample that does not decode, or lacks an image or a caption, is dropped from its batch and counted (a batch may
therefore be a little smaller than the others; the gathered loss accepts that). A run in which more than
`max_bad_sample_fraction` of the samples a process has read are bad stops with a `ValueError` naming the worst
shards. A shard that cannot be opened or read is logged, named and counted too.

Resuming: the stream is a function of (seed, epoch, process, worker), so a resumed run at optimizer step `s` fast
forwards the interrupted epoch by reading, shuffling and dropping the raw bytes of the batches already trained on,
without decoding them ([`ImageTextShards.resume_at`]); the batches that follow are those of the uninterrupted run,
provided the number of processes, workers, the batch size and the seed are unchanged.
"""

from __future__ import annotations

import os
import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from ..core.distributed import rank_world
from ..core.images import IMAGE_EXTENSIONS, ImageError
from ..core.shards import decode_image, expand_shards, image_member, stream_samples  # noqa: F401 (expand_shards re-exported)
from .data import CAPTION, IMAGE, caption_problem


logger = logging.get_logger(__name__)

CAPTION_EXTENSION = "txt"
# Key of the per-batch bookkeeping a worker sends with each batch; `ShardLoader` removes it before the model sees it.
STREAM_STATS = "__stream_stats__"
COUNT_NAMES = ("train_skipped_samples", "train_repeated_samples", "train_stream_samples")
# Below this many samples read, a process judges the bad-sample fraction only at the end of an epoch.
MIN_SAMPLES_FOR_BAD_FRACTION = 1000
_MAX_LISTED_SHARDS = 5


def _check_enough_shards(num_shards: int, world: int, num_workers: int) -> None:
    if num_shards < world * num_workers:
        raise ValueError(
            f"{num_shards} shard(s) for {world} process(es) × {num_workers} data-loader worker(s): every worker "
            "needs a shard of its own. Use fewer --dataloader_num_workers or more, smaller shards."
        )


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


# --------------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------------


def decode_sample(sample: dict[str, Any]) -> tuple[Image.Image | None, str, str]:
    """`(image, caption, problem)` of one raw webdataset sample (`{"__key__", "jpg": bytes, "txt": bytes, ...}`):
    the first image by [`IMAGE_EXTENSIONS`] (`jpg`, `jpeg`, `png`, ...) decoded as an RGB PIL image and the `txt`
    caption; `problem` is '' when both are usable, else what is wrong (then the image may be `None`)."""
    image_key = image_member(sample)
    caption = sample.get(CAPTION_EXTENSION)
    if isinstance(caption, bytes):
        try:
            caption = caption.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, "", "caption is not UTF-8"
    if caption is None:
        return None, "", f"no .{CAPTION_EXTENSION} caption"
    problem = caption_problem(caption)
    if problem:
        return None, "", problem
    if image_key is None:
        return None, caption, f"no image (none of {', '.join(IMAGE_EXTENSIONS)})"
    try:
        return decode_image(sample), caption, ""
    except ImageError as error:
        return None, caption, str(error)


@dataclass
class StreamCounts:
    """What a stream has read: samples (good and bad), bad samples per shard, shard errors, repeated samples."""

    samples: int = 0
    bad: int = 0
    repeated: int = 0
    bad_per_shard: Counter = field(default_factory=Counter)

    def add(self, other: StreamCounts) -> None:
        self.samples += other.samples
        self.bad += other.bad
        self.repeated += other.repeated
        self.bad_per_shard.update(other.bad_per_shard)

    def reset(self) -> None:
        """Back to zero, in place: the shard-error handler of an open stream holds this object."""
        self.samples = self.bad = self.repeated = 0
        self.bad_per_shard = Counter()

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "bad": self.bad,
            "repeated": self.repeated,
            "shards": dict(self.bad_per_shard),
        }

    @classmethod
    def from_dict(cls, data: dict) -> StreamCounts:
        return cls(data["samples"], data["bad"], data["repeated"], Counter(data["shards"]))

    def worst_shards(self) -> str:
        listed = ", ".join(f"{url} ({count})" for url, count in self.bad_per_shard.most_common(_MAX_LISTED_SHARDS))
        more = len(self.bad_per_shard) - _MAX_LISTED_SHARDS
        return listed + (f" and {more} more shards" if more > 0 else "")


class _ShardErrors:
    """webdataset error handler: logs a shard that cannot be opened or read, counts it, and continues."""

    def __init__(self, counts: StreamCounts):
        self.counts = counts

    def __call__(self, error: Exception) -> bool:
        url = getattr(error, "shard", None) or next(
            (arg for arg in reversed(error.args) if isinstance(arg, str) and arg), "?"
        )
        logger.warning(f"Skipping the rest of a shard that cannot be read ({url}): {error}")
        self.counts.bad_per_shard[url] += 1
        self.counts.bad += 1
        self.counts.samples += 1
        return True


# --------------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------------


class ImageTextShards(IterableDataset):
    """Image–caption pairs streamed from webdataset shards.

    Training streams (`batch_size` given) yield collated batches, `batches_per_epoch` per process per epoch; they
    are iterated by a [`ShardLoader`] (what [`DiffCLIPTrainer`] builds for them). Evaluation streams (`batch_size`
    `None`) yield `{"image": PIL image or None, "caption": str}` once per sample of their shards, in order, for the
    standard `DataLoader` and [`DiffCLIPDataCollator`] (a bad sample has image `None` and is dropped by the
    collator).

    Args:
        shards (`list[str]`): shard paths or URLs, e.g. from [`expand_shards`].
        collator ([`DiffCLIPDataCollator`], *optional*): makes batches of decoded samples (training streams); its
            `image_transform`, if it has one, is reseeded for every batch (seed, epoch, process, batch).
        batch_size (`int`, *optional*): samples per batch per process (training streams).
        num_samples (`int`, *optional*): samples in one epoch over all processes (training streams).
        gradient_accumulation_steps (`int`): batches per optimizer step; an epoch is a whole number of steps.
        seed (`int`): seeds the shard shuffle, the sample shuffle and the augmentation.
        shuffle_buffer (`int`): samples in each worker's shuffle buffer (0: no sample shuffle).
        split_by_node (`bool`): deal the shards to the processes (training); without it every process reads all.
        max_bad_sample_fraction (`float`): the fraction of bad samples beyond which [`ShardLoader`] stops the run.
    """

    def __init__(
        self,
        shards: list[str],
        collator=None,
        batch_size: int | None = None,
        num_samples: int | None = None,
        gradient_accumulation_steps: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 5000,
        split_by_node: bool = True,
        max_bad_sample_fraction: float = 0.01,
    ):
        super().__init__()
        if not shards:
            raise ValueError("No shards to stream.")
        if shuffle_buffer < 0:
            raise ValueError(f"The shuffle buffer must hold 0 or more samples, got {shuffle_buffer}.")
        if not 0 <= max_bad_sample_fraction <= 1:
            raise ValueError(f"--max_bad_sample_fraction must be within [0, 1], got {max_bad_sample_fraction}.")
        self.shards = list(shards)
        self.collator = collator
        self.batch_size = batch_size
        self.num_samples = num_samples
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.split_by_node = split_by_node
        self.max_bad_sample_fraction = max_bad_sample_fraction
        self.epoch = 0
        self._resume = (None, 0)
        self.resumed_totals = {}
        if batch_size is not None:
            if num_samples is None or num_samples <= 0:
                raise ValueError(
                    "A streamed training set has no length: pass --train_num_samples (samples per epoch)."
                )
            if collator is None:
                raise ValueError("A training stream needs a collator.")
            if self.batches_per_epoch() == 0:
                world = rank_world(from_environment=True)[1]
                raise ValueError(
                    f"--train_num_samples {num_samples} is less than one optimizer step: {world} process(es) × "
                    f"batch {batch_size} × {gradient_accumulation_steps} accumulation step(s)."
                )

    # -- epoch bookkeeping (called in the main process; workers receive a copy when they start) --

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, batches_done: int, totals: dict[str, int] | None = None) -> None:
        """Start the stream at batch `batches_done` of epoch `epoch` (this process's batches), reading but not
        decoding the samples of the batches before it. `totals`: the counts of [`ShardLoader.log_metrics`] when the
        checkpoint was written (all processes together), which the logged counts continue from."""
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(batches_done))
        self.resumed_totals = dict(totals or {})

    def batches_per_epoch(self) -> int:
        world = rank_world(from_environment=True)[1] if self.split_by_node else 1
        per_step = self.batch_size * self.gradient_accumulation_steps
        return self.num_samples // world // per_step * self.gradient_accumulation_steps

    def __len__(self) -> int:
        if self.batch_size is None:
            raise TypeError("An evaluation stream has no length.")
        return self.batches_per_epoch() * self.batch_size

    # -- iteration (in each data-loader worker) --

    def _slot(self) -> tuple[int, int, int, int]:
        rank, world = rank_world(from_environment=True) if self.split_by_node else (0, 1)
        worker, num_workers = _worker()
        return rank, world, worker, num_workers

    def _slot_shards(self, epoch: int) -> list[str]:
        """This worker's shards for `epoch`: the seeded shuffle of the list, dealt to processes then workers."""
        rank, world, worker, num_workers = self._slot()
        shards = list(self.shards)
        if self.batch_size is not None:  # training: a new shard order every epoch
            random.Random(f"diffclip-shards/{self.seed}/{epoch}").shuffle(shards)
        return shards[rank::world][worker::num_workers]

    def _raw_samples(self, shards: list[str], rng_name: str, counts: StreamCounts):
        import webdataset as wds

        if not shards:
            return iter(())
        handler = _ShardErrors(counts)

        def samples(source):  # core.shards reads the opened shards (its member size limit)
            return stream_samples(wds.tariterators.url_opener(source, handler=handler), handler=handler)

        stages = [wds.SimpleShardList(shards), samples]
        if self.shuffle_buffer > 1 and self.batch_size is not None:
            rng = random.Random(rng_name)
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(1000, self.shuffle_buffer), rng=rng))
        return iter(wds.DataPipeline(*stages))

    def __iter__(self):
        if self.batch_size is None:
            yield from self._iter_samples()
        else:
            yield from self._iter_batches()

    def _iter_samples(self):
        counts = StreamCounts()
        for sample in self._raw_samples(self._slot_shards(self.epoch), "", counts):
            image, caption, problem = decode_sample(sample)
            if problem:
                logger.warning(f"Skipping sample {sample.get('__key__')!r} of {sample.get('__url__')}: {problem}")
                image = None
            yield {IMAGE: image, CAPTION: caption}

    def _iter_batches(self):
        rank, world, worker, num_workers = self._slot()
        epoch = self.epoch
        _check_enough_shards(len(self.shards), world, num_workers)
        resume_epoch, batches_done = self._resume
        skip = batches_done if resume_epoch == epoch else 0
        own = range(worker, self.batches_per_epoch(), num_workers)  # this process's batches that this worker makes
        name = f"diffclip-samples/{self.seed}/{epoch}/{rank}/{worker}"
        transform = getattr(self.collator, "image_transform", None)
        shards = self._slot_shards(epoch)
        counts = StreamCounts()
        stream, passes, read_in_pass = self._raw_samples(shards, name, counts), 0, 0
        for batch_index in own:
            raw = []
            while len(raw) < self.batch_size:
                sample = next(stream, None)
                if sample is None:  # this worker's shards hold less than its share: go through them again
                    if read_in_pass == 0:
                        raise ValueError(f"No readable sample in the shards {shards}.")
                    passes, read_in_pass = passes + 1, 0
                    random.Random(f"{name}/{passes}").shuffle(shards)
                    stream = self._raw_samples(shards, f"{name}/{passes}", counts)
                    continue
                read_in_pass += 1
                counts.repeated += passes > 0
                raw.append(sample)
            if batch_index < skip:  # resuming: these samples were trained on before the interruption
                yield {STREAM_STATS: None}
                continue
            if hasattr(transform, "reseed"):  # crops depend on the batch, not on what was decoded before it
                transform.reseed(f"diffclip-augment/{self.seed}/{epoch}/{rank}/{batch_index}")
            images, captions = [], []
            for sample in raw:
                image, caption, problem = decode_sample(sample)
                counts.samples += 1
                if problem:
                    counts.bad += 1
                    counts.bad_per_shard[sample.get("__url__", "?")] += 1
                    logger.warning(f"Skipping sample {sample.get('__key__')!r} of {sample.get('__url__')}: {problem}")
                    continue
                images.append(image)
                captions.append(caption)
            batch = self.collator([{IMAGE: i, CAPTION: c} for i, c in zip(images, captions)]) if images else {}
            batch[STREAM_STATS] = counts.as_dict()
            counts.reset()  # in place: the open stream's shard-error handler keeps counting into it
            yield batch


# --------------------------------------------------------------------------------------------------
# The loader of a training stream
# --------------------------------------------------------------------------------------------------


class ShardLoader(DataLoader):
    """`DataLoader` of a training [`ImageTextShards`] stream: `len()` batches per epoch on every process.

    Workers make whole batches (`batch_size=None` here); this loader removes each batch's bookkeeping, adds it to
    [`counts`] (this process's samples, bad samples per shard, repeats) and stops the run with a `ValueError` naming
    the worst shards when the bad fraction exceeds the stream's `max_bad_sample_fraction` (judged from
    `MIN_SAMPLES_FOR_BAD_FRACTION` samples on, and at the end of every epoch). Persistent workers are not used: the
    workers of each epoch start from the stream's epoch.
    """

    def __init__(self, dataset: ImageTextShards, num_workers: int = 0, **kwargs):
        _check_enough_shards(len(dataset.shards), rank_world(from_environment=True)[1], max(1, num_workers))
        kwargs.pop("persistent_workers", None)
        if num_workers == 0:
            kwargs.pop("prefetch_factor", None)
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)
        self.counts = StreamCounts()

    def __len__(self) -> int:
        return self.dataset.batches_per_epoch()

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def _check_bad_fraction(self, end_of_epoch: bool) -> None:
        counts, limit = self.counts, self.dataset.max_bad_sample_fraction
        if counts.samples == 0 or (counts.samples < MIN_SAMPLES_FOR_BAD_FRACTION and not end_of_epoch):
            return
        if counts.bad > limit * counts.samples:
            raise ValueError(
                f"{counts.bad} of the {counts.samples} training samples read by this process are bad "
                f"({counts.bad / counts.samples:.2%} > --max_bad_sample_fraction {limit}); shards with bad samples "
                f"(count): {counts.worst_shards()}. Fix or remove those shards, or raise --max_bad_sample_fraction."
            )

    def __iter__(self):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Length of IterableDataset")
            for batch in super().__iter__():
                stats = batch.pop(STREAM_STATS)
                if stats is None:  # a batch skipped on resume
                    continue
                self.counts.add(StreamCounts.from_dict(stats))
                self._check_bad_fraction(end_of_epoch=False)
                if not batch:
                    raise ValueError(
                        f"Every sample of a training batch was bad; shards with bad samples: "
                        f"{self.counts.worst_shards()}."
                    )
                yield batch
        self._check_bad_fraction(end_of_epoch=True)

    def log_metrics(self, device: torch.device | str | None = None) -> dict[str, int]:
        """`train_skipped_samples` (bad samples dropped), `train_repeated_samples` and `train_stream_samples`
        (samples decoded) of the run, all processes together (a collective: every process must call this; `device`
        is where the backend reduces, e.g. `args.device`), continuing from a resumed checkpoint's counts."""
        values = [self.counts.bad, self.counts.repeated, self.counts.samples]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            tensor = torch.tensor(values, dtype=torch.long, device=device)
            torch.distributed.all_reduce(tensor)
            values = tensor.tolist()
        carried = self.dataset.resumed_totals
        return {name: int(value) + carried.get(name, 0) for name, value in zip(COUNT_NAMES, values)}


class StreamCountsCallback(TrainerCallback, ExportableState):
    """Writes the counts of [`ShardLoader.log_metrics`] into every checkpoint's `trainer_state.json` (under
    `stateful_callbacks`), where a resumed run reads them to continue counting ([`resume_position`])."""

    def __init__(self, totals: dict[str, int] | None = None):
        self.totals = dict(totals or {})

    def on_step_end(self, args, state, control, train_dataloader=None, **kwargs):
        # Every process is here (a save follows on all of them), so the counts can be summed over processes.
        if control.should_save and isinstance(train_dataloader, ShardLoader):
            self.totals = train_dataloader.log_metrics(args.device)

    on_epoch_end = on_step_end  # where --save_strategy epoch saves

    def state(self) -> dict:
        return {"args": {"totals": self.totals}, "attributes": {}}


def resume_position(
    checkpoint: str, steps_per_epoch: int, gradient_accumulation_steps: int
) -> tuple[int, int, dict[str, int]]:
    """`(epoch, batches done in it, stream counts)` of a Trainer checkpoint: the position by the rule Trainer uses to
    resume a run whose epoch has `steps_per_epoch` optimizer steps, and the counts [`StreamCountsCallback`] saved."""
    from transformers.trainer_callback import TrainerState

    state_file = os.path.join(checkpoint, "trainer_state.json")
    if not os.path.isfile(state_file):
        raise FileNotFoundError(f"--resume_from_checkpoint {checkpoint!r}: no trainer_state.json in it.")
    state = TrainerState.load_from_json(state_file)
    saved = (state.stateful_callbacks or {}).get(StreamCountsCallback.__name__, {})
    totals = saved.get("args", {}).get("totals", {}) if isinstance(saved, dict) else {}
    step = state.global_step
    return step // steps_per_epoch, step % steps_per_epoch * gradient_accumulation_steps, totals
