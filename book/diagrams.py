"""The book's diagrams: ideas drawn from a few numbers and strings, not charts of a run.

Chapters import this file as ``import diagrams`` (they run in ``book/``). What takes a
library object (a tokenizer, a model, a sampler, a run's metrics) is charted by
``tinylm.plots``; what only illustrates an idea is drawn here, in the same colours
(``KIND_COLORS``: data, model, training, evaluation) so that charts and diagrams read alike.

Each function returns a matplotlib ``Figure``, most drawn in data coordinates on a hidden
axis with ``_box`` and ``_arrow``; like the library's charts, pyplot does not keep it, so a
notebook shows it once, as the cell's value.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle

from tinylm.model import GPTConfig
from tinylm.pipeline import CHAPTERS, CONCURRENT, MAX_WORKERS
from tinylm.plots import KIND_COLORS, MONO, subplots, visible_whitespace


def _diagram(width: float, height: float, scale: float = 1.0):
    """A figure whose axis is ``width`` x ``height`` data units, one unit ~ ``scale`` inch."""
    fig, ax = subplots(figsize=(width * scale, height * scale))
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


def workflow() -> Figure:
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
    side = ", ".join(name[:2].lstrip("0") for name in CHAPTERS if name in CONCURRENT)
    _box(ax, x0, 0.85, right - x0, 0.75, fill=KIND_COLORS["note"],
         text=f"tinylm pipeline: papermill runs the {len(CHAPTERS)} chapters with your configuration "
              f"-> runs/<name>/notebooks/*.ipynb; once the model is trained, chapters {side} run\n"
              f"side by side (one per physical core, at most {MAX_WORKERS}). A stage whose inputs "
              "and settings are unchanged (same fingerprint) is skipped",
         size=9)
    _box(ax, x0, 0.1, right - x0, 0.55, fill="#ffffff", edge="#aaaaaa",
         text="across every stage: chapter 8 (troubleshooting) and chapter 9 (hyperparameter "
              "reference)", size=9)
    return fig


def bpe_merges(steps: Sequence[Sequence[str]], merges: Sequence[tuple[str, str]]) -> Figure:
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
            a, b = (visible_whitespace(t) for t in merges[r - 1])
            label = f"merge {r}: '{a}' + '{b}' -> '{a}{b}'   ({len(tokens)} tokens)"
        ax.text(0.2, y + 0.52, label, fontsize=9, va="bottom")
        x = 0.2
        new = "".join(merges[r - 1]) if r else None
        for tok in tokens:
            w = len(tok) * unit
            _box(ax, x + 0.02, y, w - 0.04, 0.45, visible_whitespace(tok),
                 fill=cmap(min(0.15 + 0.17 * len(tok), 0.9)),
                 edge="#d62728" if tok == new else "#666666", lw=2.0 if tok == new else 0.6,
                 size=8, family=MONO, color="white" if len(tok) >= 4 else "black")
            x += w
    return fig


def architecture(cfg) -> Figure:
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
    rotary = cfg.positions == "rotary"
    if rotary:  # no position table: attention rotates queries and keys by position
        _arrow(ax, (cx, 0.8), (cx, 1.2))
        _box(ax, bx, 1.2, bw, 0.8, f"token embedding\nwte: {V:,} x {C}", fill=KIND_COLORS["model"],
             size=8.5)
        ax.plot([cx, cx], [2.0, 2.61], color="#444444", lw=1.3)
    else:
        half = bw / 2 - 0.08
        _arrow(ax, (bx + half / 2, 0.8), (bx + half / 2, 1.2))
        _box(ax, bx, 1.2, half, 0.8, f"token embedding\nwte: {V:,} x {C}", fill=KIND_COLORS["model"], size=8.5)
        _box(ax, cx + 0.08, 1.2, half, 0.8, f"position embedding\nwpe: {T} x {C}",
             fill=KIND_COLORS["model"], size=8.5)
        ax.text(cx + 0.08 + half / 2, 0.95, "positions 0 ... T-1", ha="center", fontsize=7.5, color="#555555")
        plus(2.45)
        for x in (bx + half / 2, cx + 0.08 + half / 2):
            ax.plot([x, x, cx + (0.16 if x > cx else -0.16)], [2.0, 2.45, 2.45], color="#444444", lw=1.3)
    norm = "LayerNorm" if cfg.norm == "layernorm" else "RMSNorm"
    attention = f"causal self-attention\n{H} heads of {C // H} dims"
    if rotary or cfg.qk_norm:
        attention += "\n" + ", ".join(n for n, on in (("QK-norm", cfg.qk_norm),
                                                       ("rotary q, k", rotary)) if on)
    if cfg.mlp == "swiglu":
        hidden = GPTConfig(V, T, L, H, C, 0.0, mlp="swiglu").mlp_hidden
        mlp = f"MLP  {C} -> 2 x {hidden} -> {C}\nSwiGLU"
    else:
        mlp = f"MLP  {C} -> {4 * C} -> {C}\nGELU"
    # the repeated block; the residual stream runs up its left side
    y, rx = 3.2, bx - 0.2
    _arrow(ax, (cx, 2.61), (cx, y))
    block_bottom = 3.0
    for sub, label in ((norm, attention), (norm, mlp)):
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
    top = stage(y + 0.55, f"final {norm}", "note", h=0.45, size=8.5)
    top = stage(top + 0.35, f"output head (tied to wte)\n{C} -> {V:,}", "model", h=0.75)
    top = stage(top + 0.35, f"logits  (B, T, V={V:,})", "data")
    stage(top + 0.35, "softmax -> next-token probabilities", "eval")
    return fig


def windows(pieces: Sequence[str], block_size: int, n_windows: int = 2) -> Figure:
    """How the token stream becomes training examples: windows of ``block_size + 1`` tokens,
    overlapping by one, each giving inputs ``x`` and the same tokens shifted by one, ``y``.

    ``pieces`` are the first tokens of the stream as text (``n_windows * block_size + 1``
    of them are drawn).
    """
    T = block_size
    n = n_windows * T + 1
    pieces = [visible_whitespace(p) for p in list(pieces)[:n]]
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
    return fig


def forward_pass(cfg) -> Figure:
    """One training step's forward pass with the shapes of ``cfg``: ids to a single loss.

    Two rows of four columns (the second read right to left, under the logits) keep the
    figure narrow enough that its labels stay legible at the width of a page.
    """
    B, T, C, V, L = cfg.batch_size, cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_layer
    steps = [("x: token ids", f"({B}, {T})", "data"),
             ("embeddings\nwte[x] + wpe", f"({B}, {T}, {C})", "model"),
             (f"{L} blocks", f"({B}, {T}, {C})", "model"),
             ("LayerNorm, head\nlogits", f"({B}, {T}, {V:,})", "model"),
             ("softmax\nprobabilities p", f"({B}, {T}, {V:,})", "eval"),
             ("-log p[target]\nmean", f"({B}, {T}) -> ()", "eval"),
             ("loss", "one number", "train")]
    w, h, gap = 1.75, 1.2, 0.45
    col = lambda i: 0.2 + i * (w + gap)  # noqa: E731
    cells = [(col(i), 3.6) for i in range(4)] + [(col(3 - i), 1.6) for i in range(3)]
    fig, ax = _diagram(col(4) - gap + 0.2, 5.5, scale=0.9)
    for (x, y), (name, shape, kind) in zip(cells, steps):
        _box(ax, x, y, w, h, fill=KIND_COLORS[kind])
        ax.text(x + w / 2, y + 0.78, name, ha="center", va="center", fontsize=10)
        ax.text(x + w / 2, y + 0.24, shape, ha="center", va="center", fontsize=9, family=MONO,
                color="#333333")
    for (x0, y0), (x1, y1) in zip(cells, cells[1:]):
        if y0 == y1:  # along a row: left to right on top, right to left below
            start, end = ((x0 + w, y0 + 0.6), (x1, y1 + 0.6)) if x1 > x0 else ((x0, y0 + 0.6), (x1 + w, y1 + 0.6))
        else:  # down from the logits to the softmax
            start, end = (x0 + w / 2, y0), (x1 + w / 2, y1 + h)
        _arrow(ax, start, end)
    xt, yt = cells[5]
    _box(ax, xt, 0.2, w, 0.8, f"y: targets\n({B}, {T})", fill=KIND_COLORS["data"], size=10)
    _arrow(ax, (xt + w / 2, 1.0), (xt + w / 2, yt))
    ax.text(0.2, 0.6, r"$L = -\dfrac{1}{BT}\sum_{b,t}\ \log\ p_\theta(y_{b,t} \mid x_{b,1..t})$",
            fontsize=13, va="center")
    ax.text(0.2, 5.15, f"B = batch_size = {B},  T = block_size = {T},  C = n_embd = {C},  "
                       f"V = vocab_size = {V:,}", fontsize=10, color="#555555")
    return fig


def attention(labels: Sequence[str] = ("In", "the", "beginning", "God", "created", "the"),
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
    fig, axes = subplots(1, 3, figsize=(13, 4.6), layout="constrained")
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
    return fig


def backprop(n_layer: int = 2) -> Figure:
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
    return fig


def sampling(labels: Sequence[str], panels: dict[str, Sequence[float]],
             drawn: Sequence[float] | None = None) -> Figure:
    """What the sampling settings do to one next-token distribution: a bar chart per setting.

    ``labels`` name the tokens shown (the likeliest first), ``panels`` map a setting to the
    probability of each of those tokens under it; a token a setting rules out has 0. With
    ``drawn``, the last panel also marks how often each token was actually drawn.
    """
    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = subplots(rows, cols, figsize=(3.2 * cols + 0.6, 3.6 * rows), sharey=True,
                         layout="constrained", squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    x = np.arange(len(labels))
    for i, (ax, (title, probs)) in enumerate(zip(axes, panels.items())):
        probs = np.asarray(probs, dtype=float)
        ax.bar(x, probs, 0.75, color=np.where(probs > 0, "#1f77b4", "#cccccc"))
        ax.plot(x[probs == 0], np.zeros((probs == 0).sum()), "x", color="#d62728", ms=5)
        if drawn is not None and i == n - 1:
            ax.plot(x, drawn, "o", mfc="none", color="#d62728", ms=5, label="share drawn")
            ax.legend(fontsize=7.5, loc="upper right")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x, [visible_whitespace(t) for t in labels], rotation=90, fontsize=7.5,
                      family=MONO)
        ax.text(0.97, 0.62, f"shown: {probs.sum():.0%}\nof the mass", transform=ax.transAxes,
                ha="right", fontsize=7.5, color="#555555")
    for ax in axes[::cols]:
        ax.set_ylabel("probability of the next token")
    fig.supxlabel("the likeliest next tokens under the model's own distribution (x: ruled out)", fontsize=9)
    return fig


def float_formats() -> Figure:
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
    return fig


def atomic_save() -> Figure:
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
    return fig


def deployment() -> Figure:
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
    return fig




def data_parallel(nproc: int = 2, batch_size: int = 16) -> Figure:
    """Data parallelism: every process steps on its share of one global batch, an all-reduce
    averages their gradients, and every copy of the model takes the same step. The gradient
    numbers are made up; the split is ``tinylm.distributed.shard``'s."""
    grads = np.array([[0.4, -0.2, 0.1, 0.3], [0.0, 0.4, 0.3, -0.1],
                      [0.2, 0.0, -0.4, 0.2], [-0.2, 0.2, 0.4, 0.0]])[:nproc]
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    shards = np.array_split(np.arange(batch_size), nproc)
    cell = 5.6 / batch_size
    x_box = 0.3 + batch_size * cell + 0.5
    x_grad, x_all = x_box + 3.3, x_box + 6.6
    x_mean = x_all + 2.3
    height = 1.3 + nproc * 1.1
    fig, ax = _diagram(x_mean + 3.6, height, scale=0.62)

    def cells(i, y, color):
        ax.add_patch(Rectangle((0.3 + i * cell, y), cell * 0.88, 0.4, facecolor=color, alpha=0.75))

    def vector(x, y, values, color):
        for j, v in enumerate(values):
            _box(ax, x + j * 0.62, y, 0.56, 0.45, f"{v:+.2f}", fill="white", edge=color, size=7.5)

    for i in range(batch_size):
        cells(i, height - 0.75, "#999999")
    ax.text(0.3, height - 0.25, f"one global batch: batch_size = {batch_size} windows, the same on "
                                "every process", fontsize=9, va="center")
    rows = [height - 1.9 - r * 1.1 for r in range(nproc)]
    for r, (shard, y) in enumerate(zip(shards, rows)):
        for i in shard:
            cells(i, y + 0.05, colors[r])
        _arrow(ax, (0.3 + (shard[-1] + 1) * cell, y + 0.25), (x_box, y + 0.25), color=colors[r])
        _box(ax, x_box, y - 0.1, 2.7, 0.7, f"rank {r}: forward and\nbackward on {len(shard)} windows",
             fill=KIND_COLORS["model"], edge=colors[r], size=8)
        _arrow(ax, (x_box + 2.7, y + 0.25), (x_grad, y + 0.25), color=colors[r])
        vector(x_grad, y + 0.02, grads[r], colors[r])
        _arrow(ax, (x_grad + 2.5, y + 0.25), (x_all, y + 0.25))
        vector(x_mean, y + 0.02, grads.mean(axis=0), "#444444")
        _arrow(ax, (x_mean + 2.5, y + 0.25), (x_mean + 2.85, y + 0.25))
        _box(ax, x_mean + 2.85, y, 0.65, 0.5, "step", fill=KIND_COLORS["train"], size=8)
    _box(ax, x_all, rows[-1] - 0.1, 1.8, rows[0] - rows[-1] + 0.7,
         "all-reduce:\nthe mean of\n" + ", ".join(f"g{r}" for r in range(nproc)),
         fill=KIND_COLORS["train"], size=8.5)
    ax.text(x_grad, height - 0.95, "each its own gradient", fontsize=8.5, va="center")
    ax.text(x_mean, height - 0.95, "all the same: the same AdamW\nstep, so the same weights",
            fontsize=8.5, va="center")
    return fig
