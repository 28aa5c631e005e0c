"""Charts of the measurements the chapters make beside a run: a live training loss, short
demonstration runs, AdamW's moments of one weight, a gradient's singular values before and
after Muon's orthogonalization, clipped gradients, sampling settings,
hyperparameter sweeps, memory and latency.

They take plain numbers (lists, dicts, arrays) that a chapter measured, and follow the
conventions of ``tinylm.plots``: a ``Figure`` that pyplot does not keep, axes with units.

>>> fig = plot_live_loss([6.9, 6.1, 5.6, 5.4])
>>> fig.axes[0].get_xlabel()
'optimizer step'
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tinylm.plots import subplots


def plot_live_loss(losses: Sequence[float], total_steps: int | None = None, smooth: float = 0.9,
                   ln_vocab: float | None = None, title: str = "training loss, step by step") -> Figure:
    """Per-step training loss as it arrives (redraw it as the list grows): raw and smoothed.

    ``smooth`` is the weight of an exponential moving average (0 = none); ``ln_vocab``
    draws the loss of a uniform guess, ``ln(vocab_size)``, for scale.
    """
    losses = np.asarray(losses, dtype=float)
    fig, ax = subplots(figsize=(7, 3.6), layout="constrained")
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
    return fig


def plot_step_losses(curves: dict, ln_vocab: float | None = None, title: str = "",
                     log_y: bool = False, ylabel: str = "training loss (nats per token)") -> Figure:
    """Loss per step of short runs: ``{label: losses}`` or ``{label: (steps, losses)}``.

    ``ln_vocab`` draws the loss of a uniform guess, ``ln(vocab_size)``: a run above it
    knows less than nothing, the mark of divergence.
    """
    fig, ax = subplots(figsize=(8, 3.8), layout="constrained")
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
    return fig


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
    fig, (a1, a2) = subplots(1, 2, figsize=(11, 3.8), layout="constrained")
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
    return fig


def plot_singular_values(gradient: Sequence[float], step: Sequence[float]) -> Figure:
    """A gradient matrix's singular values (divided by the largest) beside those of Muon's
    step direction, largest first: how evenly each spreads over its directions."""
    fig, ax = subplots(figsize=(8, 3.4), layout="constrained")
    g = np.sort(np.asarray(gradient, dtype=float))[::-1]
    ranks = np.arange(1, len(g) + 1)
    ax.semilogy(ranks, g / g[0], lw=2, label="gradient, divided by its largest")
    ax.semilogy(ranks, np.sort(np.asarray(step, dtype=float))[::-1], lw=2,
                label="orthogonalized (Muon's step direction)")
    ax.set_xlabel("singular value, largest first")
    ax.set_ylabel("size (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_grad_clipping(before: Sequence[float], after: Sequence[float], clip: float) -> Figure:
    """The global gradient norm of each step before and after ``clip_grad_norm_``."""
    steps = np.arange(1, len(before) + 1)
    fig, ax = subplots(figsize=(8, 3.6), layout="constrained")
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
    return fig


def plot_sampling_grid(values, temperatures: Sequence[float], penalties: Sequence[float],
                       label: str = "share of repeated word 4-grams") -> Figure:
    """A sample-quality figure over temperature (rows) x repetition penalty (columns)."""
    values = np.asarray(values, dtype=float)
    fig, ax = subplots(figsize=(6, 3.8), layout="constrained")
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
    return fig


def plot_sweep(results: Sequence[dict], metrics: dict[str, str]) -> Figure:
    """One row per swept setting, one column per measured figure.

    ``results`` holds dicts with ``param``, ``value`` and a number per key of ``metrics``
    (key -> axis label with its unit). The value the run uses can be flagged with
    ``"base": True``; it is drawn filled.
    """
    params = list(dict.fromkeys(r["param"] for r in results))
    fig, axes = subplots(len(params), len(metrics), figsize=(3.4 * len(metrics), 2.5 * len(params)),
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
    return fig


def plot_memory_breakdown(bars: dict[str, dict[str, float]], title: str = "") -> Figure:
    """Stacked horizontal bars of memory parts in MB: ``{bar label: {part: MB}}``."""
    labels = list(bars)
    parts = list(dict.fromkeys(p for b in bars.values() for p in b))
    cmap = plt.get_cmap("tab10")
    fig, ax = subplots(figsize=(9, 0.75 * len(labels) + 1.6), layout="constrained")
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
    return fig


def plot_latency_histogram(times_ms: Sequence[float], budget_ms: float | None = None,
                           title: str = "") -> Figure:
    """Request latencies with their p50, p95 and p99, and the p95 budget."""
    fig, ax = subplots(figsize=(8, 3.6), layout="constrained")
    ax.hist(times_ms, bins=min(30, max(8, len(times_ms) // 3)), color="#1f77b4", alpha=0.7)
    for q, ls in ((50, "-"), (95, "--"), (99, ":")):
        v = np.percentile(times_ms, q)  # linear interpolation, like the budget check
        ax.axvline(v, color="#333333", ls=ls, lw=1.2, label=f"p{q} = {v:.1f} ms")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="#d62728", lw=2, label=f"p95 budget = {budget_ms:g} ms")
    ax.set_xlabel("latency of one request (ms)")
    ax.set_ylabel("requests")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_latency_vs_tokens(new_tokens: Sequence[int], series: dict[str, Sequence[float]]) -> Figure:
    """Median request latency against tokens generated, one line per way of generating."""
    fig, ax = subplots(figsize=(8, 3.6), layout="constrained")
    for label, ms in series.items():
        ax.plot(new_tokens, ms, "o-", label=label)
    ax.set_xlabel("new tokens per request (batch 1)")
    ax.set_ylabel("median latency (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig

