"""Every figure the book shows, drawn by code so that it always matches the run.

Conventions, the same for every ``plot_*`` function:

- It takes library objects (``CorpusStats``, the token stage's ``meta`` dict, a tokenizer,
  a ``GPT``, a ``training_metrics.json`` dict, a config) and returns a matplotlib
  ``Figure``. It never calls ``plt.show()``: the figure is closed in pyplot before it is
  returned, so a notebook shows it exactly once (as the cell's value) and a script can
  ``fig.savefig("x.png")`` under any backend, Agg included.
- Plots have labelled axes with units ("loss (nats per token)", "size (kB)"); diagrams
  are drawn in data coordinates on a hidden axis with the ``_box``/``_arrow`` helpers.
- Colours: one per language (``LANG_COLORS``), one per kind of thing in diagrams
  (``KIND_COLORS``: data, model, training, evaluation).
- ``Table`` is the one table type: Markdown in Jupyter and the book, text elsewhere.

>>> fig = plot_live_loss([6.9, 6.1, 5.6, 5.4])
>>> fig.axes[0].get_xlabel()
'optimizer step'
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
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
#: Results of a full default-preset run, committed with the book for comparison.
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "book" / "reference"


def lang_color(lang: str) -> str:
    return LANG_COLORS.get(lang, "#555555")


# ------------------------------------------------------------------ shared helpers
class Table:
    """Rows under headers; renders as a Markdown table in Jupyter and the book.

    >>> print(Table(["lang", "bytes"], [["en", "1,024"]]))
    lang  bytes
    ----  -----
    en    1,024
    """

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 align: str | None = None) -> None:
        self.headers = [str(h) for h in headers]
        self.rows = [[str(c) for c in row] for row in rows]
        self.align = align or "l" + "r" * (len(self.headers) - 1)  # text first, numbers after

    def _repr_markdown_(self) -> str:
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        rule = {"l": ":--", "r": "--:", "c": ":-:"}
        lines = ["| " + " | ".join(map(esc, self.headers)) + " |",
                 "|" + "|".join(rule[a] for a in self.align) + "|"]
        lines += ["| " + " | ".join(map(esc, row)) + " |" for row in self.rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        widths = [max(len(r[i]) for r in [self.headers, *self.rows]) for i in range(len(self.headers))]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([fmt(self.headers), fmt(["-" * w for w in widths]), *map(fmt, self.rows)])

    __repr__ = __str__


def load_reference(name: str) -> dict | None:
    """``book/reference/<name>.json`` (``training_metrics``, ``samples``, ``budgets``) of the
    reference run, or None when this checkout does not have it."""
    path = REFERENCE_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _closed(fig: Figure) -> Figure:
    plt.close(fig)
    return fig


def _diagram(width: float, height: float, scale: float = 1.0):
    """A figure whose axis is ``width`` x ``height`` data units, one unit ~ ``scale`` inch."""
    fig, ax = plt.subplots(figsize=(width * scale, height * scale))
    fig.subplots_adjust(0, 0, 1, 1)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def _box(ax, x: float, y: float, w: float, h: float, text: str = "", fill: str = "#ffffff",
         edge: str = "#444444", size: float = 9, lw: float = 1.0, **text_kw):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=fill, edgecolor=edge, linewidth=lw))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, **text_kw)


def _arrow(ax, start, end, color: str = "#444444", text: str = "", ls: str = "-",
           curve: float = 0.0, size: float = 8, lw: float = 1.3, text_offset=(0, 0.12)):
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, linestyle=ls,
                                shrinkA=0, shrinkB=0, connectionstyle=f"arc3,rad={curve}"))
    if text:
        ax.text((start[0] + end[0]) / 2 + text_offset[0], (start[1] + end[1]) / 2 + text_offset[1],
                text, ha="center", va="bottom", fontsize=size, color=color)


def _step_row(ax, steps, x0: float, w: float, gap: float, arrow_in: bool) -> None:
    """A left-to-right row of (text, kind) boxes joined by arrows, at height 2.2-3.5;
    ``arrow_in`` also draws an arrow into the first box (from whatever stands left of it)."""
    for i, (text, kind) in enumerate(steps):
        x = x0 + i * (w + gap)
        _box(ax, x, 2.2, w, 1.3, text, fill=KIND_COLORS[kind], size=8.5)
        if i or arrow_in:
            _arrow(ax, (x - gap, 2.85), (x, 2.85))


def _visible(piece: str) -> str:
    """Make spaces and line breaks visible in a token label."""
    return piece.replace(" ", "\u2423").replace("\n", "\u21b5")


def _size_unit(n_bytes: float) -> tuple[str, float]:
    return ("MB", 1e6) if n_bytes >= 1e6 else ("kB", 1e3)


def _history(metrics: dict | list) -> list[dict]:
    return metrics["history"] if isinstance(metrics, dict) else list(metrics)


# ------------------------------------------------------------------ chapter 1: overview
def plot_workflow() -> Figure:
    """The whole workflow: the stages, the ``run.*`` call that builds each, its files, chapters."""
    stages = [
        ("corpus", "run.corpus()", "corpus/\ntrain.txt  val.txt\nstats.json", "1", "data"),
        ("tokenizer", "run.tokenizer()", "tokenizer/\ntokenizer.json", "2", "data"),
        ("tokens", "run.tokens()", "tokens/\ntrain.bin  val.bin\nmeta.json", "2, 4", "data"),
        ("model", "GPT(GPTConfig)", "(in memory;\nsaved with the\ncheckpoints)", "3", "model"),
        ("training", "run.train()", "checkpoints/*.pt\ntraining_metrics\n.json", "5, 6", "train"),
        ("evaluation", "run.samples()", "samples.json", "7", "eval"),
        ("budgets", "run.budgets()", "budgets.json", "10", "eval"),
    ]
    w, gap, x0 = 1.75, 0.3, 0.25
    fig, ax = _diagram(x0 * 2 + len(stages) * w + (len(stages) - 1) * gap, 5.2, scale=0.95)
    for i, (name, call, files, chapters, kind) in enumerate(stages):
        x = x0 + i * (w + gap)
        ax.text(x + w / 2, 4.75, f"chapter {chapters}", ha="center", fontsize=9, color="#555555")
        _box(ax, x, 3.2, w, 1.3, fill=KIND_COLORS[kind])
        ax.text(x + w / 2, 4.05, name, ha="center", va="center", fontsize=11, fontweight="bold")
        ax.text(x + w / 2, 3.55, call, ha="center", va="center", fontsize=8, family=MONO)
        ax.plot([x + w / 2] * 2, [3.2, 2.85], color="#999999", ls=":", lw=1)
        ax.text(x + w / 2, 2.8, files, ha="center", va="top", fontsize=7.5, family=MONO, color="#333333")
        if i:
            _arrow(ax, (x - gap, 3.85), (x, 3.85))
    right = x0 + len(stages) * w + (len(stages) - 1) * gap
    _box(ax, x0, 0.85, right - x0, 0.75, fill=KIND_COLORS["note"],
         text="tinylm pipeline: papermill runs chapters 01-10 in order with your configuration "
              "-> runs/<name>/notebooks/*.ipynb\n"
              "a stage whose inputs and settings are unchanged (same fingerprint) is skipped",
         size=9)
    _box(ax, x0, 0.1, right - x0, 0.55, fill="#ffffff", edge="#aaaaaa",
         text="across every stage: chapter 8 (troubleshooting) and chapter 9 (hyperparameter "
              "reference)", size=9)
    return _closed(fig)


def plot_corpus_stats(stats) -> Figure:
    """Corpus size per language and split, and the extra bytes non-ASCII letters cost.

    ``stats`` is a ``CorpusStats`` (``run.corpus()``) or its dict.
    """
    s = stats if isinstance(stats, dict) else stats.to_dict()
    langs, splits = s["languages"], s["splits"]
    unit, div = _size_unit(max(splits["train"][l]["bytes"] for l in langs))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained",
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
    return _closed(fig)


# ------------------------------------------------------------------ chapter 2: tokenization
def plot_bpe_merges(steps: Sequence[Sequence[str]], merges: Sequence[tuple[str, str]]) -> Figure:
    """One row per step of a toy BPE: ``steps[0]`` the characters, ``steps[i]`` after merge i.

    ``merges[i]`` is the pair merged between ``steps[i]`` and ``steps[i + 1]``; its tokens
    are outlined in red in the row it creates.
    """
    n_chars = sum(len(t) for t in steps[0])
    unit, row_h = 0.3, 0.95
    width = n_chars * unit + 0.4
    fig, ax = _diagram(width, row_h * len(steps) + 0.1, scale=0.95)
    cmap = plt.get_cmap("YlGnBu")
    for r, tokens in enumerate(steps):
        y = (len(steps) - 1 - r) * row_h + 0.1
        if r == 0:
            label = f"start: {len(tokens)} tokens, one per character"
        else:
            a, b = merges[r - 1]
            label = (f"merge {r}: '{_visible(a)}' + '{_visible(b)}' -> '{_visible(a + b)}'"
                     f"   ({len(tokens)} tokens)")
        ax.text(0.2, y + 0.52, label, fontsize=9, va="bottom")
        x = 0.2
        new = "".join(merges[r - 1]) if r else None
        for tok in tokens:
            w = len(tok) * unit
            _box(ax, x + 0.02, y, w - 0.04, 0.45, _visible(tok), fill=cmap(min(0.15 + 0.17 * len(tok), 0.9)),
                 edge="#d62728" if tok == new else "#666666", lw=2.0 if tok == new else 0.6,
                 size=8, family=MONO, color="white" if len(tok) >= 4 else "black")
            x += w
    return _closed(fig)


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
    fig, ax = _diagram(per_row * unit + 0.5, height, scale=1.0)
    y = height
    for title, label, line in rows:
        if title:
            y -= title_h
            ax.text(0.2, y + 0.08, title, fontsize=9, va="bottom")
        y -= box_h + gap
        x, base = 0.2, lang_color(label[:2].lower())
        for i, (piece, n) in enumerate(line):
            w = max(len(piece), 1) * unit
            text = _visible(piece) + "*" * (n > 1)
            filled = i % 2 == 0  # alternate filled and outlined boxes so token borders show
            _box(ax, x + 0.015, y, w - 0.03, box_h, text, fill=base if filled else "white", edge=base,
                 lw=1.2, size=7.5, family=MONO, color="white" if filled else "black")
            x += w
    return _closed(fig)


def plot_tokens_per_byte(meta: dict) -> Figure:
    """Tokens per UTF-8 byte for each language and split, from the token stage's ``meta``."""
    langs = list(meta["splits"]["train"])
    fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
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
    return _closed(fig)


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
    fig, axes = plt.subplots(1, 2 if texts else 1, figsize=(10.5 if texts else 5.5, 3.6),
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
    return _closed(fig)


# ------------------------------------------------------------------ chapter 3: the model
def plot_architecture(cfg) -> Figure:
    """The GPT of ``cfg`` (a ``Config`` or ``GPTConfig``) bottom to top, with tensor shapes."""
    V, T, L, H, C = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd
    fig, ax = _diagram(8.4, 12.3, scale=0.78)
    cx, bw = 3.4, 3.6
    bx = cx - bw / 2

    def stage(y, text, kind, h=0.62, size=9):
        """A full-width box at ``y`` with an arrow into it from ``y - 0.35``; returns its top."""
        _arrow(ax, (cx, y - 0.35), (cx, y))
        _box(ax, bx, y, bw, h, text, fill=KIND_COLORS[kind], size=size)
        return y + h

    def plus(y):
        ax.add_patch(plt.Circle((cx, y), 0.16, fc="white", ec="#444444"))
        ax.text(cx, y, "+", ha="center", va="center", fontsize=11)

    _box(ax, bx, 0.2, bw, 0.6, f"token ids  (B, T={T})", fill=KIND_COLORS["data"], size=9)
    half = bw / 2 - 0.08
    _arrow(ax, (bx + half / 2, 0.8), (bx + half / 2, 1.2))
    _box(ax, bx, 1.2, half, 0.8, f"token embedding\nwte: {V:,} x {C}", fill=KIND_COLORS["model"], size=8.5)
    _box(ax, cx + 0.08, 1.2, half, 0.8, f"position embedding\nwpe: {T} x {C}",
         fill=KIND_COLORS["model"], size=8.5)
    ax.text(cx + 0.08 + half / 2, 0.95, "positions 0 ... T-1", ha="center", fontsize=7.5, color="#555555")
    plus(2.45)
    for x in (bx + half / 2, cx + 0.08 + half / 2):
        ax.plot([x, x, cx + (0.16 if x > cx else -0.16)], [2.0, 2.45, 2.45], color="#444444", lw=1.3)
    # the repeated block; the residual stream runs up its left side
    y, rx = 3.2, bx - 0.2
    _arrow(ax, (cx, 2.61), (cx, y))
    block_bottom = 3.0
    for sub, label in (("LayerNorm", f"causal self-attention\n{H} heads of {C // H} dims"),
                       ("LayerNorm", f"MLP  {C} -> {4 * C} -> {C}\nGELU")):
        top = stage(y + 0.35, sub, "note", h=0.45, size=8.5)
        top = stage(top + 0.35, label, "model", h=0.8)
        plus(top + 0.35)
        _arrow(ax, (cx, top), (cx, top + 0.19))
        ax.plot([cx, rx, rx], [y + 0.12, y + 0.12, top + 0.35], color="#1f77b4", lw=1.5)
        _arrow(ax, (rx, top + 0.35), (cx - 0.16, top + 0.35), color="#1f77b4")
        y = top + 0.51
    _box(ax, bx - 0.45, block_bottom, bw + 0.9, y + 0.15 - block_bottom, fill="none", edge="#888888", lw=1.2)
    ax.text(bx + bw + 0.6, y + 0.1, f"x {L} blocks", fontsize=11, fontweight="bold", ha="left", va="top")
    ax.text(rx - 0.15, (block_bottom + y) / 2, "residual stream  (B, T, C)", rotation=90, ha="right",
            va="center", fontsize=8.5, color="#1f77b4")
    top = stage(y + 0.55, "final LayerNorm", "note", h=0.45, size=8.5)
    top = stage(top + 0.35, f"output head (tied to wte)\n{C} -> {V:,}", "model", h=0.75)
    top = stage(top + 0.35, f"logits  (B, T, V={V:,})", "data")
    stage(top + 0.35, "softmax -> next-token probabilities", "eval")
    return _closed(fig)


def param_groups(model) -> dict[str, int]:
    """Parameters of a ``GPT`` by part (the tied embedding counted once, as in ``num_params``)."""
    groups = {"token embedding (= output head)": 0, "position embedding": 0,
              "attention (qkv + projection)": 0, "MLP": 0, "LayerNorm": 0}
    for name, p in model.named_parameters():  # tied weights appear once
        key = ("token embedding (= output head)" if name.startswith("wte") else
               "position embedding" if name.startswith("wpe") else
               "attention (qkv + projection)" if ".attn." in name else
               "MLP" if ".mlp." in name else "LayerNorm")
        groups[key] += p.numel()
    return groups


def plot_param_breakdown(model) -> Figure:
    """Where the parameters of a ``GPT`` are, by part."""
    groups = param_groups(model)
    total = sum(groups.values())
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    names = list(groups)[::-1]
    values = np.array([groups[n] for n in names]) / 1e3
    bars = ax.barh(names, values, color=[KIND_COLORS["data"] if "embedding" in n else "#f5b971"
                                          for n in names], edgecolor="#555555")
    ax.bar_label(bars, labels=[f"{groups[n]:,}  ({100 * groups[n] / total:.1f} %)" for n in names],
                 fontsize=8, padding=3)
    ax.set_xlabel("parameters (thousands)")
    ax.set_title(f"{total:,} parameters in all")
    ax.margins(x=0.35)
    return _closed(fig)


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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, max(3.6, 0.24 * len(names) + 1.2)),
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
    return _closed(fig)


# ------------------------------------------------------------------ chapter 4: data
def plot_windows(pieces: Sequence[str], block_size: int, n_windows: int = 2) -> Figure:
    """How the token stream becomes training examples: windows of ``block_size + 1`` tokens,
    overlapping by one, each giving inputs ``x`` and the same tokens shifted by one, ``y``.

    ``pieces`` are the first tokens of the stream as text (``n_windows * block_size + 1``
    of them are drawn).
    """
    T = block_size
    n = n_windows * T + 1
    pieces = [_visible(p) for p in list(pieces)[:n]]
    cw, label_w = 1.0, 2.3
    rows = 1 + 2 * n_windows
    fig, ax = _diagram(label_w + n * cw + 0.9, rows * 0.75 + 1.5, scale=0.72)
    shades = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]

    def row(r, start, count, color, label, filled):
        y = (rows - 1 - r) * 0.75 + 1.35
        ax.text(label_w - 0.15, y + 0.27, label, ha="right", va="center", fontsize=9)
        for i in range(start, start + count):
            _box(ax, label_w + i * cw + 0.04, y, cw - 0.08, 0.54, pieces[i], size=7.5, family=MONO,
                 fill=color if filled else "white", edge=color,
                 color="white" if filled else "black")
        return y

    ys = row(0, 0, n, "#7f7f7f", "token stream", True)
    ax.text(label_w + n * cw + 0.1, ys + 0.27, "...", va="center", fontsize=12)
    for w in range(n_windows):
        c = shades[w % len(shades)]
        yx = row(1 + 2 * w, w * T, T, c, f"window {w}: input x", True)
        yy = row(2 + 2 * w, w * T + 1, T, c, f"window {w}: target y", False)
        if w == 0:
            _arrow(ax, (label_w + 0.5 * cw, yx), (label_w + 0.5 * cw + 0.5, yy + 0.54), color=c,
                   lw=1.0)
            ax.text(label_w + 0.1, yy + 0.27, "next\ntoken", ha="center", va="center", fontsize=7,
                    color=c)
    ax.text(label_w, 0.75, f"block_size T = {T}: window i covers tokens i*T ... i*T+T "
                           f"(T+1 tokens); consecutive windows share one token",
            fontsize=9, va="center")
    ax.text(label_w, 0.3, "a batch stacks B windows drawn in a shuffled order: "
                          "x and y are (B, T) tensors of token ids",
            fontsize=9, va="center")
    return _closed(fig)


def plot_epoch_order(sampler, epochs: int = 2) -> Figure:
    """The order in which an ``EpochSampler`` visits the windows, one panel per epoch."""
    fig, axes = plt.subplots(1, epochs, figsize=(4.6 * epochs, 3.8), layout="constrained",
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
    return _closed(fig)


def plot_stream_languages(meta: dict) -> Figure:
    """The token streams of both splits with their language runs (``meta["spans"]``)."""
    fig, axes = plt.subplots(2, 1, figsize=(10, 2.8), layout="constrained")
    for ax, split in zip(axes, ("train", "val")):
        for start, end, lang in meta["spans"][split]:
            ax.broken_barh([(start / 1e3, (end - start) / 1e3)], (0, 1), color=lang_color(lang))
            ax.text((start + end) / 2e3, 0.5, f"{lang}: {end - start:,} tokens", ha="center",
                    va="center", color="white", fontsize=9, fontweight="bold")
        ax.set_xlim(0, meta["tokens"][split] / 1e3)
        ax.set_yticks([])
        ax.set_ylabel(split, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("position in the token stream (thousands of tokens)")
    return _closed(fig)


# ------------------------------------------------------------------ chapter 5: training
def plot_forward_pass(cfg) -> Figure:
    """One training step's forward pass with the shapes of ``cfg``: ids to a single loss."""
    B, T, C, V, L = cfg.batch_size, cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_layer
    steps = [("x: token ids", f"({B}, {T})", "data"),
             ("embeddings\nwte[x] + wpe", f"({B}, {T}, {C})", "model"),
             (f"{L} blocks", f"({B}, {T}, {C})", "model"),
             ("LayerNorm, head\nlogits", f"({B}, {T}, {V:,})", "model"),
             ("softmax\nprobabilities p", f"({B}, {T}, {V:,})", "eval"),
             ("-log p[target]\nmean", f"({B}, {T}) -> ()", "eval"),
             ("loss", "one number", "train")]
    w, gap = 1.55, 0.38
    fig, ax = _diagram(len(steps) * (w + gap) + 0.1, 4.0, scale=0.92)
    for i, (name, shape, kind) in enumerate(steps):
        x = 0.2 + i * (w + gap)
        _box(ax, x, 2.0, w, 1.2, fill=KIND_COLORS[kind])
        ax.text(x + w / 2, 2.75, name, ha="center", va="center", fontsize=9)
        ax.text(x + w / 2, 2.22, shape, ha="center", va="center", fontsize=8, family=MONO,
                color="#333333")
        if i:
            _arrow(ax, (x - gap, 2.6), (x, 2.6))
    xt = 0.2 + 5 * (w + gap)
    _box(ax, xt, 0.55, w, 0.75, f"y: targets\n({B}, {T})", fill=KIND_COLORS["data"], size=9)
    _arrow(ax, (xt + w / 2, 1.3), (xt + w / 2, 2.0))
    ax.text(0.2, 0.9, r"$L = -\dfrac{1}{BT}\sum_{b,t}\ \log\ p_\theta(y_{b,t} \mid x_{b,1..t})$",
            fontsize=13, va="center")
    ax.text(0.2, 3.6, f"B = batch_size = {B},  T = block_size = {T},  C = n_embd = {C},  "
                      f"V = vocab_size = {V:,}", fontsize=9, color="#555555")
    return _closed(fig)


def plot_attention_diagram(labels: Sequence[str] = ("In", "the", "beginning", "God", "created", "the"),
                           seed: int = 0) -> Figure:
    """Causal self-attention on a toy sentence: scores q.k/sqrt(d), the causal mask, softmax.

    The scores are random (seeded); the point is the shape of the computation.
    """
    T = len(labels)
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 1.2, (T, T))
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    masked = np.where(future, -np.inf, scores)
    weights = np.exp(masked - masked.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), layout="constrained")
    panels = [(scores, "1. scores  $q_t \\cdot k_s / \\sqrt{d}$", "RdBu_r", None),
              (np.ma.masked_array(scores, future), "2. causal mask: $s > t$ set to $-\\infty$",
               "RdBu_r", None),
              (np.ma.masked_array(weights, future), "3. softmax over each row: weights", "Blues", (0, 1))]
    for ax, (m, title, cmap, lim) in zip(axes, panels):
        cm = plt.get_cmap(cmap).copy()
        cm.set_bad("#d9d9d9")
        v = np.abs(scores).max()
        im = ax.imshow(m, cmap=cm, vmin=lim[0] if lim else -v, vmax=lim[1] if lim else v)
        ax.set_xticks(range(T), labels, rotation=45, ha="right")
        ax.set_yticks(range(T), labels)
        ax.set_xlabel("key position s (attended to)")
        ax.set_title(title, fontsize=10)
        for t in range(T):
            for s in range(T):
                if lim and not future[t, s]:
                    ax.text(s, t, f"{weights[t, s]:.2f}", ha="center", va="center", fontsize=7.5,
                            color="white" if weights[t, s] > 0.55 else "black")
                elif future[t, s] and m is not scores:
                    ax.text(s, t, "-inf" if not lim else "0", ha="center", va="center", fontsize=7,
                            color="#777777")
        fig.colorbar(im, ax=ax, shrink=0.75, label="attention weight (rows sum to 1)" if lim
                     else "score (dimensionless)")
    axes[0].set_ylabel("query position t (attending)")
    fig.suptitle("output$_t$ = $\\sum_s$ weight$_{t,s}\\ v_s$: each position mixes the values of "
                 "itself and the positions before it", fontsize=10)
    return _closed(fig)


def attention_weights(model, idx, layer: int = 0):
    """The attention weights of every head of ``layer`` for one sequence of token ids.

    Recomputes ``softmax(q k^T / sqrt(d))`` with the causal mask from the block's own
    ``qkv`` projection (the model's fused attention kernel does not return them).
    Returns a tensor of shape ``(n_head, T, T)``; row ``t`` sums to 1 over ``s <= t``.
    """
    import torch

    device = next(model.parameters()).device
    idx = torch.as_tensor(idx, dtype=torch.long, device=device).view(1, -1)
    T = idx.size(1)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = model.wte(idx) + model.wpe(torch.arange(T, device=device))
        for block in model.blocks[:layer]:
            x = block(x)
        block = model.blocks[layer]
        C, H = x.size(-1), block.attn.n_head
        q, k, _ = block.attn.qkv(block.ln1(x)).float().split(C, dim=2)
        q, k = (t.view(1, T, H, C // H).transpose(1, 2) for t in (q, k))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
        future = torch.ones(T, T, dtype=torch.bool, device=device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(-1)[0]
    model.train(was_training)
    return weights.cpu()


def plot_attention_map(model, idx, labels: Sequence[str], layer: int | None = None) -> Figure:
    """Where each token looks: the attention weights of every head of one layer (the last
    by default) of a trained ``GPT`` on the token ids ``idx``, labelled with ``labels``."""
    layer = model.config.n_layer - 1 if layer is None else layer
    weights = attention_weights(model, idx, layer).numpy()
    H, T = weights.shape[0], weights.shape[1]
    labels = [_visible(l) for l in labels]
    size = min(6.0, max(3.5, 0.22 * T + 1.2))
    cols = min(H, 2)
    rows = -(-H // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1.2, (size + 0.5) * rows),
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
    return _closed(fig)


def plot_backprop(n_layer: int = 2) -> Figure:
    """Backpropagation and the update: activations forward, gradients backward, then AdamW."""
    nodes = ["x", "embeddings", *(f"block {i + 1}" for i in range(n_layer)), "logits", "loss L"]
    grads = ["", r"$\partial L/\partial h_0$", *(rf"$\partial L/\partial h_{i + 1}$" for i in range(n_layer)),
             r"$\partial L/\partial\, \mathrm{logits}$"]
    w, gap = 1.4, 0.8
    width = len(nodes) * (w + gap) + 0.3
    fig, ax = _diagram(width, 5.4, scale=0.85)
    xs = [0.4 + i * (w + gap) for i in range(len(nodes))]
    for i, (x, name) in enumerate(zip(xs, nodes)):
        kind = "data" if i == 0 else "train" if i == len(nodes) - 1 else "model"
        _box(ax, x, 3.7, w, 0.8, name, fill=KIND_COLORS[kind], size=9.5)
        if i:
            _arrow(ax, (x - gap, 4.25), (x, 4.25))
            _arrow(ax, (x, 3.9), (x - gap, 3.9), color="#d62728")
        if i > 1:
            ax.text(x - gap / 2, 3.8, grads[i - 1], ha="center", va="top", fontsize=8.5, color="#d62728")
        if 0 < i < len(nodes) - 1:
            _arrow(ax, (x + w / 2, 3.7), (x + w / 2, 2.95), color="#d62728", ls="--", lw=1.0)
    ax.text(xs[0], 4.75, "forward: activations, left to right", fontsize=9, color="#444444")
    ax.text(xs[-1] + w, 4.75, "loss.backward(): the chain rule, right to left", ha="right", fontsize=9,
            color="#d62728")
    _box(ax, xs[1], 2.35, xs[-2] + w - xs[1], 0.6, fill="#fbe3e3", edge="#d62728", size=9,
         text=r"param.grad = $\partial L/\partial \theta$ for every weight $\theta$ of every part")
    steps = [(r"clip: scale so that" + "\n" + r"$\|g\| \leq$ grad_clip", "train"),
             (r"AdamW step:" + "\n" + r"$\theta \leftarrow \theta - \mathrm{lr} \cdot$ update", "train"),
             ("zero_grad()\nnext batch", "note")]
    sw = 2.3
    x0 = xs[1] + (xs[-2] + w - xs[1]) / 2 - (3 * sw + 2 * gap) / 2
    for i, (text, kind) in enumerate(steps):
        x = x0 + i * (sw + gap)
        _box(ax, x, 0.85, sw, 0.95, text, fill=KIND_COLORS[kind], size=9)
        if i:
            _arrow(ax, (x - gap, 1.32), (x, 1.32))
    _arrow(ax, (x0 + sw / 2, 2.35), (x0 + sw / 2, 1.8), color="#d62728")
    x_next = x0 + 2 * (sw + gap) + sw / 2
    ax.plot([x_next, x_next, 0.15, 0.15], [0.85, 0.4, 0.4, 4.1], color="#2ca02c", lw=1.3)
    _arrow(ax, (0.15, 4.1), (xs[0], 4.1), color="#2ca02c")
    ax.text(x_next - 0.1, 0.5, "next optimizer step: a new batch through the updated weights",
            ha="right", fontsize=9, color="#2ca02c")
    return _closed(fig)


def plot_loss_curves(metrics: dict | list, reference: dict | list | None = None,
                     labels: tuple[str, str] = ("this run", "reference run")) -> Figure:
    """Training and validation loss per epoch, validation per language dashed.

    ``metrics`` is ``training_metrics.json`` (or its ``history``); with ``reference``
    (another run's metrics, e.g. ``book/reference/training_metrics.json``) a second panel
    shows it beside.
    """
    runs = [(labels[0], metrics)] + ([(labels[1], reference)] if reference is not None else [])
    fig, axes = plt.subplots(1, len(runs), figsize=(5.6 * len(runs), 3.9), layout="constrained",
                             squeeze=False)
    for ax, (label, m) in zip(axes[0], runs):
        h = _history(m)
        ep = [r["epoch"] for r in h]
        ax.plot(ep, [r["train_loss"] for r in h], "o-", color="#333333", ms=3, label="training (epoch mean)")
        ax.plot(ep, [r["val_loss"] for r in h], "o-", color="#d62728", ms=3, label="validation")
        for lang in (h[0].get("val_by_lang", {}) if h else {}):
            ax.plot(ep, [r["val_by_lang"][lang]["loss"] for r in h], "--", color=lang_color(lang), lw=1.2,
                    label=f"validation, {lang}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (nats per token)")
        extra = ""
        if isinstance(m, dict) and "model" in m:
            extra = f": {m['model']['parameters']:,} parameters"
        ax.set_title(f"{label}{extra}", fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _closed(fig)


def plot_live_loss(losses: Sequence[float], total_steps: int | None = None, smooth: float = 0.9,
                   ln_vocab: float | None = None, title: str = "training loss, step by step") -> Figure:
    """Per-step training loss as it arrives (redraw it as the list grows): raw and smoothed.

    ``smooth`` is the weight of an exponential moving average (0 = none); ``ln_vocab``
    draws the loss of a uniform guess, ``ln(vocab_size)``, for scale.
    """
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="#1f77b4", alpha=0.35 if smooth else 1, lw=1, label="each step")
    if smooth and len(losses):
        ema, acc = np.empty_like(losses), 0.0
        for i, v in enumerate(losses):
            acc = smooth * acc + (1 - smooth) * v
            ema[i] = acc / (1 - smooth ** (i + 1))  # bias-corrected, as in Adam
        ax.plot(steps, ema, color="#1f77b4", lw=2, label=f"moving average ({smooth})")
    if ln_vocab:
        ax.axhline(ln_vocab, color="#777777", ls=":", lw=1)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, max(hi, ln_vocab + 0.08 * (ln_vocab - lo)))
        ax.text(1, ln_vocab, " uniform guess: ln V", va="bottom", fontsize=8, color="#555555")
    ax.set_xlim(0, total_steps or max(len(losses), 1))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats per token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _closed(fig)


# ---- chapters 6-10


# ------------------------------------------------------------------ chapter 6: optimization
def plot_lr_schedule(cfg, steps_per_epoch: int, history: Sequence[dict] = ()) -> Figure:
    """The learning rate of every step of a run of ``cfg``: linear warmup, cosine decay.

    Drawn with ``tinylm.train.lr_at``, the function the trainer calls; epoch ends are
    ruled, and ``history`` (``training_metrics.json``'s) marks the rate each epoch ended on.
    """
    from tinylm.train import lr_at

    total = cfg.epochs * steps_per_epoch
    steps = np.arange(total + 1)
    lrs = [lr_at(s, total, cfg.learning_rate, cfg.warmup_steps, cfg.min_lr_ratio) for s in steps]
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    ax.plot(steps, lrs, color="#1f77b4", lw=2, label="lr_at(step)")
    for e in range(1, cfg.epochs + 1):
        ax.axvline(e * steps_per_epoch, color="#dddddd", lw=0.8, zorder=0)
    warm = min(cfg.warmup_steps, total)
    ax.axvspan(0, warm, color=KIND_COLORS["train"], alpha=0.6, lw=0,
               label=f"warmup: {cfg.warmup_steps} steps")
    ax.axhline(cfg.learning_rate * cfg.min_lr_ratio, color="#777777", ls=":", lw=1,
               label=f"floor: learning_rate x min_lr_ratio = {cfg.learning_rate * cfg.min_lr_ratio:.1e}")
    if history:
        ax.plot([h["step"] - 1 for h in history], [h["lr"] for h in history], "o", color="#d62728",
                ms=5, label="last step of each epoch (training_metrics.json)")
    ax.set_xlabel(f"optimizer step ({cfg.epochs} epochs of {steps_per_epoch} steps; grey lines: epoch ends)")
    ax.set_ylabel("learning rate (per step)")
    ax.set_xlim(0, total)
    ax.set_ylim(0, cfg.learning_rate * 1.1)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.legend(fontsize=8, loc="upper right")
    return _closed(fig)


def plot_adam_moments(exp_avg: Sequence[float], exp_avg_sq: Sequence[float],
                      betas: tuple[float, float], eps: float = 1e-8) -> Figure:
    """One weight's gradients, AdamW's two moments of them, and the step they make.

    ``exp_avg``/``exp_avg_sq`` are the optimizer's ``m`` and ``v`` of that weight after each
    step; the gradient is recovered from ``m_t = b1 m_(t-1) + (1 - b1) g_t``.
    """
    b1, b2 = betas
    m, v = np.asarray(exp_avg, dtype=float), np.asarray(exp_avg_sq, dtype=float)
    g = (m - b1 * np.concatenate([[0.0], m[:-1]])) / (1 - b1)
    t = np.arange(1, len(m) + 1)
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    a1.plot(t, g, "o-", ms=3, lw=0.8, color="#999999", label="gradient $g_t$ of this step")
    a1.plot(t, m_hat, lw=2, color="#1f77b4", label=r"first moment $\hat m_t$: running mean")
    a1.fill_between(t, -np.sqrt(v_hat), np.sqrt(v_hat), color="#ff7f0e", alpha=0.2,
                    label=r"$\pm\sqrt{\hat v_t}$: running size (second moment)")
    a1.axhline(0, color="#444444", lw=0.5)
    a1.set_xlabel("optimizer step")
    a1.set_ylabel("gradient (d loss / d weight)")
    a1.set_title("what AdamW remembers about one weight", fontsize=10)
    a1.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    a1.legend(fontsize=8)
    a2.bar(t, m_hat / (np.sqrt(v_hat) + eps), color="#2ca02c")
    a2.axhline(0, color="#444444", lw=0.5)
    a2.set_xlabel("optimizer step")
    a2.set_ylabel(r"$\hat m_t / (\sqrt{\hat v_t} + \epsilon)$ (learning rates)")
    a2.set_title("the step it takes, before weight decay, in units of the learning rate", fontsize=10)
    a2.set_ylim(-1.15, 1.15)
    return _closed(fig)


def plot_grad_clipping(before: Sequence[float], after: Sequence[float], clip: float) -> Figure:
    """The global gradient norm of each step before and after ``clip_grad_norm_``."""
    steps = np.arange(1, len(before) + 1)
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    ax.plot(steps, before, "o-", ms=4, color="#1f77b4", label="before clipping")
    ax.plot(steps, after, "s--", ms=3, color="#2ca02c", label="after clipping: what AdamW receives")
    clipped = [s for s, b in zip(steps, before) if b > clip]
    ax.plot(clipped, [clip] * len(clipped), "v", color="#d62728", ms=8,
            label=f"clipped steps ({len(clipped)} of {len(steps)})")
    ax.axhline(clip, color="#d62728", lw=1, ls=":", label=f"grad_clip = {clip:g}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("global gradient norm (L2 over all weights)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _closed(fig)


def plot_float_formats() -> Figure:
    """The bits of fp32, bf16 and fp16: sign, exponent (range) and mantissa (precision)."""
    formats = [("fp32", 8, 23, "max 3.4e38, about 7 significant digits"),
               ("bf16", 8, 7, "max 3.4e38, about 2-3 significant digits"),
               ("fp16", 5, 10, "max 65,504, about 3-4 significant digits")]
    colors = {"sign": "#d62728", "exponent": "#1f77b4", "mantissa": "#ff7f0e"}
    fig, ax = _diagram(14.5, 3.3, scale=0.75)
    cell = 0.26
    for row, (name, exp, man, note) in enumerate(formats):
        y = 2.45 - row * 0.85
        x = 1.2
        ax.text(1.0, y + 0.25, name, ha="right", va="center", fontsize=11, fontweight="bold")
        for part, bits in (("sign", 1), ("exponent", exp), ("mantissa", man)):
            for _ in range(bits):
                ax.add_patch(Rectangle((x, y), cell * 0.92, 0.5, facecolor=colors[part], alpha=0.8))
                x += cell
        ax.text(x + 0.2, y + 0.25, f"{1 + exp + man} bits = 1 + {exp} + {man}: {note}",
                va="center", fontsize=8.5)
    for i, (part, c) in enumerate(colors.items()):
        ax.add_patch(Rectangle((1.2 + i * 3.3, 0.1), 0.25, 0.25, facecolor=c, alpha=0.8))
        what = {"sign": "sign", "exponent": "exponent bits: the range", "mantissa": "mantissa bits: the precision"}
        ax.text(1.55 + i * 3.3, 0.22, what[part], va="center", fontsize=8.5)
    return _closed(fig)


def plot_step_losses(curves: dict, ln_vocab: float | None = None, title: str = "",
                     log_y: bool = False, ylabel: str = "training loss (nats per token)") -> Figure:
    """Loss per step of short runs: ``{label: losses}`` or ``{label: (steps, losses)}``.

    ``ln_vocab`` draws the loss of a uniform guess, ``ln(vocab_size)``: a run above it
    knows less than nothing, the mark of divergence.
    """
    fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
    for label, ys in curves.items():
        xs, ys = ys if isinstance(ys, tuple) else (np.arange(1, len(ys) + 1), ys)
        ax.plot(list(xs), list(ys), lw=1.6, marker="o" if len(ys) <= 20 else None, ms=3, label=label)
    if ln_vocab:
        ax.axhline(ln_vocab, color="#777777", ls=":", lw=1, label=f"uniform guess: ln V = {ln_vocab:.2f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _closed(fig)


# ------------------------------------------------------------------ chapter 7: evaluation
def plot_checkpoint_timeline(history: Sequence[dict], checkpoint_every: int) -> Figure:
    """When each checkpoint file of a run is written, drawn from its ``history``.

    ``last.pt`` at every epoch end and every ``checkpoint_every`` steps, ``best.pt`` when
    the validation loss improves, ``final.pt`` once at the end.
    """
    steps = [h["step"] for h in history]
    total = steps[-1]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 4.6), sharex=True, layout="constrained",
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
    return _closed(fig)


def plot_atomic_save() -> Figure:
    """How ``save_checkpoint`` writes a checkpoint and its checksum so that a crash at any
    moment leaves a whole checkpoint whose digest is listed, and how it is loaded."""
    fig, ax = _diagram(13.9, 4.3, scale=0.8)
    steps = [("state dict\nmodel, optimizer,\nstep, sampler, RNG", "train"),
             ("torch.save to bytes\nin memory;\nsha256 of them", "model"),
             ("last.pt.sha256 :=\nnew digest\n+ old digest", "eval"),
             ("write .last.pt.*.tmp,\nfsync, os.replace\n-> last.pt", "data"),
             ("last.pt.sha256 :=\nnew digest only", "eval")]
    w, gap = 2.25, 0.5
    _step_row(ax, steps, 0.2, w, gap, arrow_in=False)
    ax.text(0.2, 3.9, "save_checkpoint(path, state): every file write is atomic (temporary file, "
                      "fsync, rename)", fontsize=10, fontweight="bold", family=MONO)
    ax.text(0.2, 1.6, "a kill at any moment leaves last.pt old or new, but whole, and its digest "
                      "listed in last.pt.sha256;", fontsize=9, va="center")
    ax.text(0.2, 1.2, "a file that matches no listed digest (cut short, edited, copied badly) is "
                      "refused, and --resume falls back to best.pt.", fontsize=9, va="center")
    ax.text(0.2, 0.45, "load_checkpoint: sha256 listed?  ->  torch.load(weights_only=True)  ->  "
                       "format version known?  ->  state", fontsize=9, va="center", family=MONO,
            color="#555555")
    return _closed(fig)


def plot_val_by_language(metrics: dict | list, title: str = "") -> Figure:
    """Validation loss (nats per token) and bits per byte per language and epoch."""
    h = _history(metrics)
    epochs = [r["epoch"] for r in h]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 3.7), layout="constrained")
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
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _closed(fig)


# ------------------------------------------------------------------ chapter 8: troubleshooting
def plot_sampling_grid(values, temperatures: Sequence[float], penalties: Sequence[float],
                       label: str = "share of repeated word 4-grams") -> Figure:
    """A sample-quality figure over temperature (rows) x repetition penalty (columns)."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    im = ax.imshow(values, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center",
                    color="white" if values[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(penalties)), [f"{p:g}" for p in penalties])
    ax.set_yticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
    ax.set_xlabel("repetition penalty (1 = off)")
    ax.set_ylabel("temperature (0 = greedy)")
    fig.colorbar(im, ax=ax, label=label)
    return _closed(fig)


# ------------------------------------------------------------------ chapter 9: hyperparameters
def plot_sweep(results: Sequence[dict], metrics: dict[str, str]) -> Figure:
    """One row per swept setting, one column per measured figure.

    ``results`` holds dicts with ``param``, ``value`` and a number per key of ``metrics``
    (key -> axis label with its unit). The value the run uses can be flagged with
    ``"base": True``; it is drawn filled.
    """
    params = list(dict.fromkeys(r["param"] for r in results))
    fig, axes = plt.subplots(len(params), len(metrics), figsize=(3.4 * len(metrics), 2.5 * len(params)),
                             layout="constrained", squeeze=False)
    for i, param in enumerate(params):
        rows = sorted((r for r in results if r["param"] == param), key=lambda r: r["value"])
        xs = [r["value"] for r in rows]
        for j, (key, label) in enumerate(metrics.items()):
            ax = axes[i][j]
            ax.plot(xs, [r[key] for r in rows], "-", color="#1f77b4")
            for r in rows:
                ax.plot(r["value"], r[key], "o", ms=6, color="#1f77b4",
                        mfc="#1f77b4" if r.get("base") else "white")
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel(param)
            ax.set_ylabel(label, fontsize=8)
            ax.grid(alpha=0.3)
    return _closed(fig)


# ------------------------------------------------------------------ chapter 10: budgets
def plot_memory_breakdown(bars: dict[str, dict[str, float]], title: str = "") -> Figure:
    """Stacked horizontal bars of memory parts in MB: ``{bar label: {part: MB}}``."""
    labels = list(bars)
    parts = list(dict.fromkeys(p for b in bars.values() for p in b))
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(9, 0.75 * len(labels) + 1.6), layout="constrained")
    left = np.zeros(len(labels))
    for k, part in enumerate(parts):
        widths = np.array([bars[b].get(part, 0.0) for b in labels])
        ax.barh(labels, widths, left=left, color=cmap(k % 10), label=part)
        left += widths
    for y, total in enumerate(left):
        ax.text(total, y, f"  {total:,.1f} MB", va="center", fontsize=9)
    ax.set_xlabel("memory (MB = 2^20 bytes)")
    ax.set_xlim(0, left.max() * 1.25)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    return _closed(fig)


def plot_latency_histogram(times_ms: Sequence[float], budget_ms: float | None = None,
                           title: str = "") -> Figure:
    """Request latencies with their p50, p95 and p99, and the p95 budget."""
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    ax.hist(times_ms, bins=min(30, max(8, len(times_ms) // 3)), color="#1f77b4", alpha=0.7)
    for q, ls in ((50, "-"), (95, "--"), (99, ":")):
        v = float(np.percentile(times_ms, q))
        ax.axvline(v, color="#333333", ls=ls, lw=1.2, label=f"p{q} = {v:.1f} ms")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="#d62728", lw=2, label=f"p95 budget = {budget_ms:g} ms")
    ax.set_xlabel("latency of one request (ms)")
    ax.set_ylabel("requests")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _closed(fig)


def plot_latency_vs_tokens(new_tokens: Sequence[int], series: dict[str, Sequence[float]]) -> Figure:
    """Median request latency against tokens generated, one line per way of generating."""
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    for label, ms in series.items():
        ax.plot(new_tokens, ms, "o-", label=label)
    ax.set_xlabel("new tokens per request (batch 1)")
    ax.set_ylabel("median latency (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _closed(fig)


def plot_deployment() -> Figure:
    """What ships, how it is loaded, and what is checked before it serves."""
    fig, ax = _diagram(13.2, 4.4, scale=0.8)
    files = ["final.pt", "final.pt.sha256", "tokenizer.json", "config.json"]
    _box(ax, 0.2, 0.4, 2.9, 3.5, fill=KIND_COLORS["data"])
    ax.text(1.65, 3.6, "ship these files", ha="center", fontsize=10, fontweight="bold")
    for i, name in enumerate(files):
        _box(ax, 0.45, 2.75 - i * 0.7, 2.4, 0.5, name, fill="white", size=9, family=MONO)
    steps = [("load\nchecksum, then\nweights_only=True", "model"),
             ("configure\nthreads pinned,\nfp32, eval()", "model"),
             ("warm up\na few requests", "train"),
             ("serve\nKV cache,\nbatch 1", "eval")]
    w, gap = 1.95, 0.42
    _step_row(ax, steps, 3.6, w, gap, arrow_in=True)
    _box(ax, 3.6, 0.4, 4 * w + 3 * gap, 1.1, fill=KIND_COLORS["note"],
         text="budgets, checked in a fresh process before release (run.budgets(), tinylm evaluate):\n"
              "peak RSS <= budget_rss_mb,   p95 latency <= budget_p95_ms,   samples pass",
         size=9)
    _arrow(ax, (3.6 + 2 * w + 1.5 * gap, 1.5), (3.6 + 2 * w + 1.5 * gap, 2.2), ls="--")
    return _closed(fig)
