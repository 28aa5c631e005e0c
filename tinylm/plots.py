"""Charts of a run: its corpus, tokenizer, token streams, model and training metrics.

Conventions, the same for every ``plot_*`` function (here and in ``tinylm.experiment_plots``):

- It takes what the run produced (``CorpusStats``, the token stage's ``meta`` dict, a
  tokenizer, an ``EpochSampler``, a ``GPT``, a ``training_metrics.json`` dict, a config)
  and returns a matplotlib ``Figure`` made with ``subplots``: pyplot forgets it at once,
  so a notebook shows it exactly once (as the cell's value) and a script can
  ``fig.savefig("x.png")`` under any backend, Agg included.
- Axes are labelled with units ("loss (nats per token)", "size (kB)").
- Colours: one per language (``LANG_COLORS``), one per kind of thing (``KIND_COLORS``:
  data, model, training, evaluation), shared with the book's diagrams.

>>> fig = plot_loss_curves([{"epoch": 1, "train_loss": 6.1, "val_loss": 5.9},
...                         {"epoch": 2, "train_loss": 5.2, "val_loss": 5.3}])
>>> fig.axes[0].get_ylabel()
'loss (nats per token)'
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle

LANG_COLORS = {"en": "#1f77b4", "es": "#d95f02", "fr": "#2ca02c", "de": "#7570b3", "it": "#8c564b"}
KIND_COLORS = {"data": "#dbe9f6", "model": "#fde5c8", "train": "#d9f0d3", "eval": "#eadcf2",
               "note": "#f2f2f2"}
SPLIT_HATCH = {"train": "", "val": "//"}
MONO = "DejaVu Sans Mono"


def lang_color(lang: str) -> str:
    return LANG_COLORS.get(lang, "#555555")


def subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` for a figure that is returned, not shown by pyplot (see above)."""
    fig, axes = plt.subplots(*args, **kwargs)
    plt.close(fig)
    return fig, axes


def visible_whitespace(piece: str) -> str:
    """A token as a label, its spaces and line breaks visible: ``" the\\n"`` -> ``"␣the↵"``."""
    return piece.replace(" ", "\u2423").replace("\n", "\u21b5")


def _size_unit(n_bytes: float) -> tuple[str, float]:
    return ("MB", 1e6) if n_bytes >= 1e6 else ("kB", 1e3)


def _history(metrics: dict | list) -> list[dict]:
    return metrics["history"] if isinstance(metrics, dict) else list(metrics)


def _epochs_trained(metrics: dict | list) -> list[float]:
    """Where each evaluation of a run was, in epochs trained: a run of 1.6 epochs evaluates
    at 1 and 1.6 (``training_metrics.json``'s steps); from a bare history, its epoch numbers."""
    per_epoch = metrics.get("data", {}).get("steps_per_epoch") if isinstance(metrics, dict) else None
    return [r["step"] / per_epoch if per_epoch else r["epoch"] for r in _history(metrics)]


# ------------------------------------------------------------------ the data (chapters 1, 2, 4)
def plot_corpus_stats(stats) -> Figure:
    """Corpus size per language and split, and the extra bytes non-ASCII letters cost.

    ``stats`` is a ``CorpusStats`` (``run.corpus()``) or its dict.
    """
    s = stats if isinstance(stats, dict) else stats.to_dict()
    langs, splits = s["languages"], s["splits"]
    unit, div = _size_unit(max(splits["train"][l]["bytes"] for l in langs))
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3.8), layout="constrained",
                             gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(langs))
    for j, split in enumerate(("train", "val")):
        values = [splits[split][l]["bytes"] / div for l in langs]
        bars = a1.bar(x + (j - 0.5) * 0.38, values, 0.36, color=[lang_color(l) for l in langs],
                      hatch=SPLIT_HATCH[split], edgecolor="white", label=split)
        a1.bar_label(bars, fmt="%.0f" if unit == "kB" else "%.2f", fontsize=8, padding=2)
    a1.set_xticks(x, langs)
    a1.set_xlabel("language")
    a1.set_ylabel(f"size ({unit} of UTF-8 text)")
    a1.set_title("text per language and split")
    a1.legend(handles=[Rectangle((0, 0), 1, 1, fc="#999999", hatch=SPLIT_HATCH[k], ec="white",
                                 label=k) for k in ("train", "val")])
    a1.margins(y=0.15)
    extra = [100 * (sum(splits[k][l]["bytes"] for k in splits) / max(1, sum(splits[k][l]["characters"]
                                                                        for k in splits)) - 1)
             for l in langs]
    bars = a2.bar(x, extra, 0.5, color=[lang_color(l) for l in langs])
    a2.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    a2.set_xticks(x, langs)
    a2.set_xlabel("language")
    a2.set_ylabel("extra bytes per 100 characters")
    a2.set_title("UTF-8 cost of accents (é, ñ, ¿ ...)")
    a2.margins(y=0.2)
    return fig


def _token_spans(tokenizer, text: str) -> list[tuple[int, int, int]]:
    """``(start, end, n_tokens)`` character spans of the tokens of ``text``; tokens that
    share a span (pieces of one multi-byte character) are counted together."""
    spans: list[list[int]] = []
    for s, e in tokenizer.encode(text).offsets:
        if spans and spans[-1][0] == s and spans[-1][1] == e:
            spans[-1][2] += 1
        else:
            spans.append([s, e, 1])
    return [tuple(s) for s in spans]


def plot_tokenization(tokenizer, texts: dict[str, str], per_row: int = 56) -> Figure:
    """How the trained tokenizer cuts each text: one box per token, wrapped every ``per_row``
    characters. ``texts`` maps a label (its first two letters pick the colour) to a text.
    A ``*`` marks a box holding several tokens: the byte pieces of one character."""
    rows = []  # (title or "", label, [(piece, n_tokens)]) per drawn line
    for label, text in texts.items():
        spans = _token_spans(tokenizer, text)
        n_tok, n_bytes = sum(n for _, _, n in spans), len(text.encode("utf-8"))
        title = f"{label}: {n_tok} tokens for {n_bytes} bytes ({n_tok / n_bytes:.2f} tokens per byte)"
        line, used = [], 0
        for s, e, n in spans:
            if used + (e - s) > per_row and line:
                rows.append((title, label, line))
                line, used, title = [], 0, ""
            line.append((text[s:e], n))
            used += e - s
        rows.append((title, label, line))
    unit, box_h, title_h, gap = 0.2, 0.42, 0.4, 0.12
    height = sum(box_h + gap + (title_h if t else 0) for t, _, _ in rows) + 0.1
    width = per_row * unit + 0.5
    fig, ax = subplots(figsize=(width, height))
    fig.subplots_adjust(0, 0, 1, 1)
    ax.set(xlim=(0, width), ylim=(0, height))
    ax.axis("off")
    y = height
    for title, label, line in rows:
        if title:
            y -= title_h
            ax.text(0.2, y + 0.08, title, fontsize=9, va="bottom")
        y -= box_h + gap
        x, base = 0.2, lang_color(label[:2].lower())
        for i, (piece, n) in enumerate(line):
            w = max(len(piece), 1) * unit
            text = visible_whitespace(piece) + "*" * (n > 1)
            filled = i % 2 == 0  # alternate filled and outlined boxes so token borders show
            ax.add_patch(FancyBboxPatch((x + 0.015, y), w - 0.03, box_h, edgecolor=base, linewidth=1.2,
                                        boxstyle="round,pad=0,rounding_size=0.08",
                                        facecolor=base if filled else "white"))
            ax.text(x + w / 2, y + box_h / 2, text, ha="center", va="center", fontsize=7.5, family=MONO,
                    color="white" if filled else "black")
            x += w
    return fig


def plot_tokens_per_byte(meta: dict) -> Figure:
    """Tokens per UTF-8 byte for each language and split, from the token stage's ``meta``."""
    langs = list(meta["splits"]["train"])
    fig, ax = subplots(figsize=(6.5, 3.8), layout="constrained")
    x = np.arange(len(langs))
    for j, split in enumerate(("train", "val")):
        values = [meta["splits"][split][l]["tokens_per_byte"] for l in langs]
        bars = ax.bar(x + (j - 0.5) * 0.38, values, 0.36, color=[lang_color(l) for l in langs],
                      hatch=SPLIT_HATCH[split], edgecolor="white")
        ax.bar_label(bars, labels=[f"{v:.3f}\n({1 / v:.2f} B/tok)" for v in values], fontsize=8, padding=2)
    ax.set_xticks(x, langs)
    ax.set_xlabel("language")
    ax.set_ylabel("tokens per byte (lower = more text per token)")
    ax.set_title(f"compression of a {meta['vocab_size']:,}-token vocabulary")
    ax.legend(handles=[Rectangle((0, 0), 1, 1, fc="#999999", hatch=SPLIT_HATCH[k], ec="white", label=k)
                       for k in ("train", "val")], loc="lower right")
    ax.margins(y=0.3)
    return fig


def plot_token_lengths(tokenizer, texts: dict[str, str] | None = None) -> Figure:
    """Length in bytes of the vocabulary's tokens, and of the tokens used in ``texts``
    (``{lang: text}``), where frequent short words dominate."""
    specials = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    vocab = tokenizer.get_vocab()
    # byte-level BPE spells every byte as one printable character: length in chars == bytes
    lengths = np.array([len(t) for t in vocab if t not in specials])
    top = int(min(lengths.max(), 16))
    more = f"; {top} = {top} or more" if lengths.max() > top else ""
    bins = np.arange(0.5, top + 1.5)
    fig, axes = subplots(1, 2 if texts else 1, figsize=(10.5 if texts else 5.5, 3.6),
                         layout="constrained", squeeze=False)
    a1 = axes[0, 0]
    a1.hist(np.minimum(lengths, top), bins=bins, color="#7f7f7f", edgecolor="white")
    a1.set_xlabel(f"token length (bytes{more})")
    a1.set_ylabel("vocabulary entries")
    a1.set_title(f"the {len(lengths):,} learned and byte tokens")
    if texts:
        a2 = axes[0, 1]
        for lang, text in texts.items():
            ids = tokenizer.encode(text).ids
            used = np.minimum([len(tokenizer.id_to_token(i)) for i in ids], top)
            weights = np.full(len(used), 100 / max(len(used), 1))
            a2.hist(used, bins=bins, histtype="step", lw=2, color=lang_color(lang), weights=weights,
                    label=f"{lang} (mean {np.mean(used):.2f} bytes)")
        a2.set_xlabel("token length (bytes)")
        a2.set_ylabel("share of tokens in the text (%)")
        a2.set_title("tokens as they occur in text")
        a2.legend()
    return fig


def plot_epoch_order(sampler, epochs: int = 2) -> Figure:
    """The order in which an ``EpochSampler`` visits the windows, one panel per epoch."""
    fig, axes = subplots(1, epochs, figsize=(4.6 * epochs, 3.8), layout="constrained",
                         sharey=True, squeeze=False)
    B = sampler.batch_size
    for e, ax in enumerate(axes[0]):
        order = sampler.order(e)
        ax.scatter(np.arange(len(order)), order, s=3, color=["#1f77b4", "#d62728", "#2ca02c"][e % 3])
        for b in range(1, min(sampler.batches_per_epoch, 6)):
            ax.axvline(b * B, color="#bbbbbb", lw=0.6)
        ax.set_xlabel("visit number within the epoch (windows)")
        ax.set_title(f"epoch {e + 1}: {sampler.n_windows:,} windows, each once\n"
                     f"({sampler.batches_per_epoch} batches of up to {B}; first ones ruled)",
                     fontsize=10)
    axes[0, 0].set_ylabel("window index (stream position / block_size)")
    return fig


def plot_stream_languages(meta: dict) -> Figure:
    """The token streams of both splits with their language runs (``meta["spans"]``)."""
    fig, axes = subplots(2, 1, figsize=(10, 2.8), layout="constrained")
    for ax, split in zip(axes, ("train", "val")):
        for start, end, lang in meta["spans"][split]:
            ax.broken_barh([(start / 1e3, (end - start) / 1e3)], (0, 1), color=lang_color(lang))
            ax.text((start + end) / 2e3, 0.5, f"{lang}: {end - start:,} tokens", ha="center",
                    va="center", color="white", fontsize=9, fontweight="bold")
        ax.set_xlim(0, meta["tokens"][split] / 1e3)
        ax.set_yticks([])
        ax.set_ylabel(split, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("position in the token stream (thousands of tokens)")
    return fig


# ------------------------------------------------------------------ the model (chapters 3, 5)
def plot_param_breakdown(model) -> Figure:
    """Where the parameters of a ``GPT`` are, by part."""
    groups = model.num_params_by_part()
    total = sum(groups.values())
    fig, ax = subplots(figsize=(8, 3.2), layout="constrained")
    names = list(groups)[::-1]
    values = np.array([groups[n] for n in names]) / 1e3
    bars = ax.barh(names, values, color=[KIND_COLORS["data"] if "embedding" in n else "#f5b971"
                                          for n in names], edgecolor="#555555")
    ax.bar_label(bars, labels=[f"{groups[n]:,}  ({100 * groups[n] / total:.1f} %)" for n in names],
                 fontsize=8, padding=3)
    ax.set_xlabel("parameters (thousands)")
    ax.set_title(f"{total:,} parameters in all")
    ax.margins(x=0.35)
    return fig


def plot_init_stats(model) -> Figure:
    """Weights of a freshly initialised ``GPT``: their distribution by kind, and the standard
    deviation of every matrix against the two target values of the init."""
    L = model.config.n_layer
    kinds = {"embeddings (std 0.02)": [], "linear layers (std 0.02)": [],
             f"residual projections (std 0.02/sqrt(2*{L}))": []}
    names, stds, colors = [], [], []
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        k = 0 if name.startswith(("wte", "wpe")) else 2 if name.endswith("proj.weight") else 1
        w = p.detach().float().flatten().numpy()
        list(kinds.values())[k].append(w)
        names.append(name.removesuffix(".weight"))
        stds.append(w.std())
        colors.append(palette[k])
    fig, (a1, a2) = subplots(1, 2, figsize=(11, max(3.6, 0.24 * len(names) + 1.2)),
                             layout="constrained")
    for (label, ws), c in zip(kinds.items(), palette):
        a1.hist(np.concatenate(ws), bins=120, range=(-0.08, 0.08), density=True, histtype="step",
                lw=1.6, color=c, label=label)
    a1.set_xlabel("weight value")
    a1.set_ylabel("probability density (per unit of weight)")
    a1.set_title("weights at initialisation")
    a1.set_ylim(top=a1.get_ylim()[1] * 1.45)  # room for the legend above the peak
    a1.legend(fontsize=8, loc="upper center")
    y = np.arange(len(names))[::-1]
    a2.barh(y, stds, color=colors)
    a2.set_yticks(y, names, fontsize=7.5, family=MONO)
    for v, text in ((0.02, "0.02"), (0.02 / math.sqrt(2 * L), f"0.02/sqrt({2 * L})")):
        a2.axvline(v, color="#444444", ls="--", lw=1)
        a2.text(v, y.max() + 0.9, text, ha="center", fontsize=8)
    a2.xaxis.set_major_locator(plt.MaxNLocator(5))
    a2.set_xlabel("standard deviation of the matrix's weights")
    a2.set_title("every weight matrix", pad=16)
    return fig


def plot_attention_map(model, idx, labels: Sequence[str], layer: int | None = None) -> Figure:
    """Where each token looks: the attention probabilities of every head of one layer (the
    last by default) of a trained ``GPT`` on the token ids ``idx``, labelled with ``labels``.

    They are the model's own (``GPT.attention_maps``), not a recomputation beside it.
    """
    import torch

    layer = model.config.n_layer - 1 if layer is None else layer
    ids = torch.as_tensor(idx, dtype=torch.long, device=next(model.parameters()).device).view(1, -1)
    weights = model.attention_maps(ids)[layer][0].cpu().numpy()
    H, T = weights.shape[0], weights.shape[1]
    labels = [visible_whitespace(l) for l in labels]
    size = min(6.0, max(3.5, 0.22 * T + 1.2))
    cols = min(H, 2)
    rows = -(-H // cols)
    fig, axes = subplots(rows, cols, figsize=(size * cols + 1.2, (size + 0.5) * rows),
                         layout="constrained", squeeze=False)
    for h, ax in enumerate(axes.flat):
        im = ax.imshow(np.ma.masked_array(weights[h], np.triu(np.ones((T, T), bool), 1)), cmap="Blues",
                       vmin=0, vmax=1)
        ax.set_xticks(range(T), labels, rotation=90, fontsize=7.5, family=MONO)
        ax.set_yticks(range(T), labels, fontsize=7.5, family=MONO)
        ax.set_xlabel("key token (attended to)")
        ax.set_title(f"layer {layer}, head {h}")
    for ax in axes[:, 0]:
        ax.set_ylabel("query token (attending)")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="attention weight (each row sums to 1)")
    return fig


# ------------------------------------------------------------------ training (chapters 5-7)
def plot_loss_curves(metrics: dict | list, reference: dict | list | None = None,
                     labels: tuple[str, str] = ("this run", "reference run")) -> Figure:
    """Training and validation loss per epoch, validation per language dashed.

    ``metrics`` is ``training_metrics.json`` (or its ``history``); with ``reference``
    (another run's metrics, e.g. ``book/reference/training_metrics.json``) a second panel
    shows it beside. Every curve has a marker at each epoch, so a run of one epoch shows its
    points instead of lines with nothing to join.
    """
    runs = [(labels[0], metrics)] + ([(labels[1], reference)] if reference is not None else [])
    fig, axes = subplots(1, len(runs), figsize=(5.6 * len(runs), 3.9), layout="constrained",
                         squeeze=False)
    for ax, (label, m) in zip(axes[0], runs):
        h, ep = _history(m), _epochs_trained(m)
        ax.plot(ep, [r["train_loss"] for r in h], "o-", color="#333333", ms=3, label="training (epoch mean)")
        ax.plot(ep, [r["val_loss"] for r in h], "o-", color="#d62728", ms=3, label="validation")
        for lang in (h[0].get("val_by_lang", {}) if h else {}):
            ax.plot(ep, [r["val_by_lang"][lang]["loss"] for r in h], "s--", color=lang_color(lang), lw=1.2,
                    ms=3, label=f"validation, {lang}")
        if len(ep) == 1:  # one point: an epoch's room either side, not a hair's width
            ax.set_xlim(ep[0] - 1, ep[0] + 1)
        ax.set_xlabel("epochs trained")
        ax.set_ylabel("loss (nats per token)")
        extra = ""
        if isinstance(m, dict) and "model" in m:
            extra = f": {m['model']['parameters']:,} parameters"
        ax.set_title(f"{label}{extra}", fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=all(float(e).is_integer() for e in ep))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_val_by_language(metrics: dict | list, title: str = "") -> Figure:
    """Validation loss (nats per token) and bits per byte per language and epoch."""
    h, epochs = _history(metrics), _epochs_trained(metrics)
    fig, (a1, a2) = subplots(1, 2, figsize=(10.5, 3.7), layout="constrained")
    a1.plot(epochs, [r["train_loss"] for r in h], "o--", color="#333333", ms=3, lw=1,
            label="training, both languages")
    for lang in h[0]["val_by_lang"]:
        a1.plot(epochs, [r["val_by_lang"][lang]["loss"] for r in h], "o-", ms=4,
                color=lang_color(lang), label=f"validation, {lang}")
        a2.plot(epochs, [r["val_by_lang"][lang]["bpb"] for r in h], "o-", ms=4,
                color=lang_color(lang), label=f"validation, {lang}")
    a1.set_ylabel("loss (nats per token)")
    a1.set_title("loss per token: depends on the tokenizer", fontsize=10)
    a2.set_ylabel("bits per byte of UTF-8 text")
    a2.set_title("bits per byte: comparable across tokenizers and languages", fontsize=10)
    for ax in (a1, a2):
        ax.set_xlabel("epochs trained")
        ax.xaxis.get_major_locator().set_params(integer=all(float(e).is_integer() for e in epochs))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_lr_schedule(cfg, steps_per_epoch: int, history: Sequence[dict] = (),
                     schedule: dict | None = None) -> Figure:
    """The learning rate of every step of a run of ``cfg``: linear warmup, cosine decay.

    Drawn with ``tinylm.train.Schedule``, what the trainer calls (``lr_at``, continued as a
    resume with more epochs continues it: ``schedule``, ``training_metrics.json``'s); epoch
    ends are ruled, and ``history`` marks the rate each epoch ended on.
    """
    from tinylm.data import total_steps  # torch: `tinylm plot` draws from JSON without it
    from tinylm.train import Schedule

    total = total_steps(cfg.epochs, steps_per_epoch)
    steps = np.arange(total + 1)
    rate = Schedule(**schedule) if schedule else Schedule.of(cfg, total)
    lrs = [rate(s) for s in steps]
    fig, ax = subplots(figsize=(8, 3.6), layout="constrained")
    ax.plot(steps, lrs, color="#1f77b4", lw=2, label="lr_at(step)")
    for end in range(steps_per_epoch, total + 1, steps_per_epoch):
        ax.axvline(end, color="#dddddd", lw=0.8, zorder=0)
    warm = min(cfg.warmup_steps, total)
    ax.axvspan(0, warm, color=KIND_COLORS["train"], alpha=0.6, lw=0,
               label=f"warmup: {cfg.warmup_steps} steps")
    ax.axhline(cfg.learning_rate * cfg.min_lr_ratio, color="#777777", ls=":", lw=1,
               label=f"floor: learning_rate x min_lr_ratio = {cfg.learning_rate * cfg.min_lr_ratio:.1e}")
    if history:
        ax.plot([h["step"] - 1 for h in history], [h["lr"] for h in history], "o", color="#d62728",
                ms=5, label="last step of each epoch (training_metrics.json)")
    ax.set_xlabel(f"optimizer step ({cfg.epochs:g} epochs of {steps_per_epoch} steps; grey lines: "
                  "epoch ends)")
    ax.set_ylabel("learning rate (per step)")
    ax.set_xlim(0, total)
    ax.set_ylim(0, cfg.learning_rate * 1.1)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_checkpoint_timeline(history: Sequence[dict], checkpoint_every: int) -> Figure:
    """When each checkpoint file of a run is written, drawn from its ``history``.

    ``last.pt`` at every epoch end and every ``checkpoint_every`` steps, ``best.pt`` when
    the validation loss improves, ``final.pt`` once at the end.
    """
    steps = [h["step"] for h in history]
    total = steps[-1]
    fig, (a1, a2) = subplots(2, 1, figsize=(9, 4.6), sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": [1.3, 1]})
    a1.plot(steps, [h["val_loss"] for h in history], "o-", color="#d62728", ms=4)
    a1.set_ylabel("validation loss\n(nats per token)")
    a1.grid(alpha=0.3)
    marks = {"last.pt": sorted(set(steps) | set(range(checkpoint_every, total, checkpoint_every))),
             "best.pt": [], "final.pt": [total]}
    best = math.inf
    for h in history:
        if h["val_loss"] < best:
            best = h["val_loss"]
            marks["best.pt"].append(h["step"])
    colors = {"last.pt": "#7f7f7f", "best.pt": "#2ca02c", "final.pt": "#9467bd"}
    for y, (name, xs) in enumerate(marks.items()):
        a2.axhline(y, color="#eeeeee", lw=8, zorder=0)
        a2.scatter(xs, [y] * len(xs), marker="v", s=80, color=colors[name], zorder=2)
    for s in steps:
        for ax in (a1, a2):
            ax.axvline(s, color="#dddddd", lw=0.8, zorder=0)
    a2.set_yticks(range(len(marks)), list(marks), family=MONO)
    a2.set_ylim(-0.6, len(marks) - 0.4)
    a2.invert_yaxis()
    a2.set_xlabel("optimizer step (grey lines: epoch ends; triangles: a file is written)")
    a2.set_xlim(0, total * 1.03)
    return fig

