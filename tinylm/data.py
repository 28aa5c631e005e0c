"""Token arrays on disk and the order in which training visits them.

The token stream of a split (``tokens/train.bin``, uint16) is cut into fixed windows of
``block_size + 1`` tokens that overlap by one token: window ``i`` starts at ``i *
block_size``, its first ``block_size`` tokens are the input and its last ``block_size`` are
the targets (the input shifted by one). An epoch visits every window exactly once, in an
order drawn from ``(seed, epoch)`` alone, so the position inside an epoch is two integers
and resuming mid-epoch replays exactly the batches an uninterrupted run would have seen.
A run may end inside an epoch (``epochs = 1.5``): it takes the first batches of that
epoch's order, and a longer resumed run continues from there.

>>> ds = TokenDataset(np.arange(11, dtype=np.uint16), block_size=4)
>>> len(ds), ds.window(1)[0].tolist(), ds.window(1)[1].tolist()
(2, [4, 5, 6, 7], [5, 6, 7, 8])
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tinylm.errors import CorpusError


class TokenDataset:
    """Fixed windows over one split's token array (a numpy memmap or array).

    With ``tags`` (one token id per window, from ``window_tags``), each window's first input
    token is replaced by the language tag of its document: every window then tells the model
    its language at position 0, exactly where generation puts the tag. Without it the tag
    appears once per document, at a random position of a few windows, and a prompt made of
    the tag alone is a context the model has hardly seen (an empty ``<|en|>`` prompt drifted
    into Spanish). Targets are untouched: every token is still predicted.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, tags: np.ndarray | None = None) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.n_windows = max(0, (len(tokens) - 1) // block_size)
        self.tags = tags

    @classmethod
    def from_file(cls, path: Path, block_size: int, in_memory: bool = False) -> "TokenDataset":
        """Open ``train.bin``/``val.bin`` memory-mapped, or read whole with ``in_memory=True``.

        Mapped, a split larger than memory still trains: the operating system pages in the
        windows a batch reads and drops them again under pressure. Gathering a batch from the
        map costs about what it costs from memory, which is nothing beside a training step.
        """
        tokens = np.memmap(path, dtype=np.uint16, mode="r")
        return cls(np.array(tokens) if in_memory else tokens, block_size)

    def __len__(self) -> int:
        return self.n_windows

    def window(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch(np.array([i]))
        return x[0], y[0]

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, both int64 tensors of shape (len(indices), block_size)."""
        starts = np.asarray(indices, dtype=np.int64) * self.block_size
        rows = self.tokens[starts[:, None] + np.arange(self.block_size + 1)]
        rows = torch.from_numpy(rows.astype(np.int64))
        if self.tags is not None:
            rows[:, 0] = torch.from_numpy(self.tags[np.asarray(indices)].astype(np.int64))
        return rows[:, :-1], rows[:, 1:]

    def target_positions(self, indices: np.ndarray) -> np.ndarray:
        """Stream position of every target token of the given windows (for per-language loss)."""
        starts = np.asarray(indices, dtype=np.int64) * self.block_size
        return starts[:, None] + 1 + np.arange(self.block_size)


class EpochSampler:
    """Batches of window indices: a seeded permutation per epoch, resumable mid-epoch.

    ``state_dict()`` is ``{"epoch", "batch"}``: the epoch in progress and how many of its
    batches have been consumed. The permutation is recomputed from ``(seed, epoch)``.

    With several training processes every one draws the same global batches and trains on
    its part of each (``tinylm.distributed.Team.part``), so the position is the same global
    one in all of them, whatever their number: a run may continue with another number of
    processes.
    """

    def __init__(self, n_windows: int, batch_size: int, seed: int) -> None:
        if n_windows < 1:
            raise ValueError("no complete training window")
        self.n_windows = n_windows
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.n_windows // self.batch_size)  # the last batch may be smaller

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def epoch_batches(self, until: int | None = None):
        """Yield the remaining batches of the current epoch, advancing the position; with
        ``until``, only up to that batch of the epoch (where a run ends inside it)."""
        order = self.order(self.epoch)
        end = self.batches_per_epoch if until is None else min(until, self.batches_per_epoch)
        while self.batch < end:
            i = self.batch * self.batch_size
            self.batch += 1
            yield order[i:i + self.batch_size]

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


def total_steps(epochs: float, batches_per_epoch: int) -> int:
    """Optimizer steps in ``epochs`` passes of ``batches_per_epoch`` batches: a fraction of an
    epoch rounds to whole batches, and a run takes at least one.

    >>> total_steps(2, 481), total_steps(1.5, 481), total_steps(0.001, 481)
    (962, 722, 1)
    """
    return max(1, round(epochs * batches_per_epoch))


def load_splits(tokens_dir: Path, block_size: int) -> tuple[TokenDataset, TokenDataset, dict]:
    """The training and validation windows of a run's token files, and their ``meta.json``.

    Refuses a split too short to hold one window, naming the remedy, rather than training
    on nothing.
    """
    tokens_dir = Path(tokens_dir)
    meta = load_meta(tokens_dir)
    splits = []
    for split in ("train", "val"):
        ds = TokenDataset.from_file(tokens_dir / f"{split}.bin", block_size)
        ds.tags = window_tags(meta["spans"][split], meta["special_ids"], block_size, len(ds))
        splits.append(ds)
    for name, ds in zip(("training", "validation"), splits):
        if len(ds) < 1:
            raise CorpusError(f"the {name} split has {len(ds.tokens)} tokens, fewer than one "
                              f"window of block_size+1={block_size + 1}",
                              "give a larger corpus or a smaller --block-size.")
    return splits[0], splits[1], meta


def load_meta(tokens_dir: Path) -> dict:
    """The tokenizer stage's ``meta.json``: counts, tokens per byte, language spans."""
    return json.loads((Path(tokens_dir) / "meta.json").read_text())


def window_tags(spans: list, special_ids: dict[str, int], block_size: int, n_windows: int) -> np.ndarray:
    """The language tag id of the document each window starts in (``TokenDataset.tags``).

    >>> window_tags([[0, 20, "en"], [20, 40, "es"]], {"<|en|>": 1, "<|es|>": 2}, 8, 4).tolist()
    [1, 1, 1, 2]
    """
    languages = sorted({lang for _, _, lang in spans})
    ids = np.array([special_ids[f"<|{lang}|>"] for lang in languages])
    starts = np.arange(n_windows, dtype=np.int64) * block_size
    return ids[language_of_positions(spans, starts, languages)]


def language_of_positions(spans: list, positions: np.ndarray, languages: list[str]) -> np.ndarray:
    """Index into ``languages`` of the document each stream position belongs to."""
    out = np.zeros(positions.shape, dtype=np.int64)
    for start, end, lang in spans:
        out[(positions >= start) & (positions < end)] = languages.index(lang)
    return out
