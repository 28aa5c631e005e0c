"""The GPT: a decoder-only transformer small enough to train on a laptop CPU.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP ->
residual), input and output embeddings tied, GPT-2 style init with the residual projections
scaled by 1/sqrt(2 * n_layer) so that the residual stream's variance does not grow with
depth. Positions are GPT-2's learned table or rotary (``Rotary``: the default run's, as it
learns faster). The other changes Llama-style models made are settings of their own
(``norm``, ``mlp``, ``qk_norm``, ``bias``), so that each can be measured alone; their
defaults are GPT-2's. How attention is computed depends on the device
(``attention_kernel``): on a CPU PyTorch's fused kernel runs in fp32, under bf16 autocast
too, because there its bf16 backward is slower than fp32, and fp32 beat bf16 matmuls around
an fp32 softmax written out by hand (benchmarks/README.md measures both); on a GPU the
fused kernel runs in the autocast precision (flash attention), which never materialises the
T x T matrix. Dropout, when enabled, acts on the embeddings and on each residual branch, not
on the attention probabilities: a T x T random mask per head and layer is costly to draw on
a CPU at every step. A training step on a CPU that does not need the logits
(``return_logits=False``) computes the loss a chunk of rows at a time
(``ChunkedLinearCrossEntropy``), never holding the whole batch's logits.

>>> model = GPT(GPTConfig(vocab_size=512, block_size=32, n_layer=2, n_head=2, n_embd=32,
...                        dropout=0.0))
>>> logits, loss = model(torch.zeros(1, 8, dtype=torch.long))
>>> tuple(logits.shape)
(1, 8, 512)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinylm.config import Config
from tinylm.optim import Muon, MuonWithAdamW


#: The architecture's settings and GPT-2's values of them (``GPTConfig``'s defaults).
GPT2_ARCHITECTURE = {"norm": "layernorm", "positions": "learned", "mlp": "gelu",
                     "qk_norm": False, "bias": True}


@dataclass
class GPTConfig:
    """The model settings of a run's ``Config``, the only ones the GPT reads.

    Their defaults, ranges and meaning are those of ``tinylm.config.Config``. The sizes have
    no defaults here, so a model cannot silently differ from the run that made it; the
    architecture's settings default to GPT-2's, which is what a model given only its sizes
    is, and what a checkpoint saved before they existed holds. Checkpoints store
    ``to_dict()`` and rebuild it with ``GPTConfig(**saved)``.
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    norm: str = "layernorm"
    positions: str = "learned"
    mlp: str = "gelu"
    qk_norm: bool = False
    bias: bool = True

    @classmethod
    def from_config(cls, cfg: Config) -> "GPTConfig":
        """The model settings of a run's configuration."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_gpt2(self) -> bool:
        """GPT-2's architecture (``tinylm.export`` writes it as transformers' GPT-2)."""
        return all(getattr(self, k) == v for k, v in GPT2_ARCHITECTURE.items())

    @property
    def mlp_hidden(self) -> int:
        """The feed-forward's width: 4 x n_embd, or for the gated one 8/3 of that, rounded up
        to a multiple of 32, so that its three matrices hold about the weights of two."""
        if self.mlp == "gelu":
            return 4 * self.n_embd
        return -(-8 * self.n_embd // 3 // 32) * 32


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated.

    Generation feeds one new token per step; attention then needs the keys and values of
    all earlier tokens, which the cache keeps instead of recomputing them every step.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        hd = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, config.block_size, hd)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.pos = 0  # number of positions filled

    def reset(self) -> None:
        self.pos = 0


def attention_kernel(device_type: str, dtype: torch.dtype, *, cached: bool = False,
                     keep_probs: bool = False) -> str:
    """Which attention a block computes for inputs of ``dtype`` on ``device_type``.

    - ``"by_hand"``: matmuls in ``dtype``, softmax in fp32, the T x T probabilities
      materialised: the only way to read the probabilities (``keep_probs``, for
      ``GPT.attention_maps``).
    - ``"fused"``: ``F.scaled_dot_product_attention`` in ``dtype``, on a GPU; on CUDA in bf16
      that is flash attention, which a by-hand version would replace with a T x T matrix per
      head; on Apple's MPS, PyTorch's Metal kernel of it.
    - ``"fused_fp32"``: the fused kernel in fp32 with autocast off: a CPU, in fp32 or under
      bf16 autocast (the fastest there, module docstring), and every step of KV-cached
      generation (the cache holds fp32).

    >>> attention_kernel("cpu", torch.bfloat16), attention_kernel("cuda", torch.bfloat16)
    ('fused_fp32', 'fused')
    """
    if cached:
        return "fused_fp32"
    if keep_probs:
        return "by_hand"
    return "fused_fp32" if device_type == "cpu" else "fused"


#: Logits the chunked loss computes at once: 2**21 fp32 values, few enough that a chunk's
#: log-softmax and gradient run while its logits are still in cache.
LOSS_CHUNK_ELEMENTS = 2**21


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits ``x @ weight.T`` against ``targets``, and its
    gradients, without the whole batch's logits.

    The plain loss keeps all B*T x V logits of the batch in memory, casts them,
    reads them in the log-softmax and again in its backward: on a CPU those passes over
    memory took longer than the output layer's matmuls. Here each chunk of rows gets its
    logits, their log-softmax and, at once, the gradient (softmax minus one-hot) while they
    are in cache; ``backward`` only scales the stored gradients. The matmuls run in
    ``dtype`` (bf16 under autocast) with the softmax in fp32, as the plain loss under
    autocast does; the gradients come back in the inputs' own dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor:
        n, rows = x.size(0), max(1, LOSS_CHUNK_ELEMENTS // weight.size(0))
        xs, w = x.to(dtype), weight.to(dtype)
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        dx = torch.empty_like(x)
        dw = torch.zeros_like(weight, dtype=torch.float32)
        index = torch.arange(min(rows, n), device=x.device)
        for s in range(0, n, rows):
            xc, yc = xs[s:s + rows], targets[s:s + rows]
            logp = torch.log_softmax(xc @ w.t(), dim=-1, dtype=torch.float32)
            loss -= logp.gather(1, yc[:, None]).sum()
            grad = logp.exp_()  # softmax: the gradient of the summed loss, less the one-hot
            grad[index[:len(yc)], yc] -= 1.0
            grad = grad.to(dtype)
            dx[s:s + rows] = grad @ w
            dw += grad.t() @ xc
        ctx.save_for_backward(dx, dw.to(weight.dtype))
        ctx.n = n
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        dx, dw = ctx.saved_tensors
        scale = grad_loss / ctx.n
        return dx * scale, dw * scale, None, None


def norm(config: GPTConfig) -> nn.Module:
    """The model's normalisation of a position's ``n_embd`` numbers."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=1e-5)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


#: The rotary positions' longest wavelength, in positions (over 2 pi): Llama's.
ROTARY_BASE = 10_000.0


class Rotary(nn.Module):
    """Rotary positions (Su et al., 2021): each pair of a head's query and key dimensions is
    rotated by an angle proportional to the position, at its own frequency, so that their
    product depends on how far apart two tokens are, not where they are. The pairs are
    (i, i + head_dim / 2), as in transformers' Llama and GPT-NeoX, so that an export to them
    needs no reordering of the query and key weights.
    """

    def __init__(self, head_dim: int, block_size: int, base: float = ROTARY_BASE) -> None:
        super().__init__()
        freqs = base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), freqs).repeat(1, 2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """``x`` (B, heads, T, head_dim) at positions ``start`` ... ``start + T - 1``."""
        T, half = x.size(-2), x.size(-1) // 2
        cos, sin = self.cos[start:start + T].to(x.dtype), self.sin[start:start + T].to(x.dtype)
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        head_dim = config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.residual = True  # marks the init scaling below
        self.resid_drop = nn.Dropout(config.dropout)
        # QK-norm: a gain per head dimension, shared by the heads (as Qwen3's)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-5) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-5) if config.qk_norm else None
        self.rotary = (Rotary(head_dim, config.block_size) if config.positions == "rotary"
                       else None)
        mask = torch.ones(config.block_size, config.block_size, dtype=torch.bool).tril()
        self.register_buffer("causal", mask, persistent=False)
        self.keep_probs = False  # set by GPT.attention_maps, which reads self.probs
        self.probs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:
            start = cache.pos if cache is not None else 0
            q, k = self.rotary(q, start), self.rotary(k, start)
        kernel = attention_kernel(x.device.type, q.dtype, cached=cache is not None,
                                  keep_probs=self.keep_probs)
        if kernel == "by_hand":
            att = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(~self.causal[:T, :T], float("-inf")).softmax(dim=-1)
            if self.keep_probs:
                self.probs = att.detach()
            y = att.to(v.dtype) @ v
            return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        if kernel == "fused":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        with torch.autocast(device_type=x.device.type, enabled=False):
            q, k, v = q.float(), k.float(), v.float()
            mask, causal = None, True
            if cache is not None:
                start = cache.pos
                cache.k[layer][:, :, start:start + T] = k
                cache.v[layer][:, :, start:start + T] = v
                k, v = cache.k[layer][:, :, :start + T], cache.v[layer][:, :, :start + T]
                if start > 0:  # new queries see every cached key and the causal part of their own
                    causal = False
                    if T > 1:
                        mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        y = y.transpose(1, 2).reshape(B, T, C).to(x.dtype)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    """GPT-2's feed-forward (GELU), or the gated one of Llama (SwiGLU): ``fc`` then computes
    the gate and the value side by side, ``silu(gate) * value``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gated = config.mlp == "swiglu"
        hidden = config.mlp_hidden
        self.fc = nn.Linear(config.n_embd, 2 * hidden if self.gated else hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.proj.residual = True
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, value = self.fc(x).chunk(2, dim=-1)
            return self.drop(self.proj(F.silu(gate) * value))
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln2 = norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = (nn.Embedding(config.block_size, config.n_embd)
                    if config.positions == "learned" else None)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = norm(config)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied: one matrix maps ids to vectors and back
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(module, "residual", False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, reduction: str = "mean", return_logits: bool = True,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits for every position, and the cross-entropy loss when targets are given.

        With a ``cache``, ``idx`` holds only the new tokens; their positions continue from
        ``cache.pos``. ``reduction="none"`` returns one loss per target token (for
        per-language evaluation). ``return_logits=False`` returns None for the logits; a
        training step on a CPU then computes the mean loss chunk by chunk, faster and
        without the batch's logits in memory (``ChunkedLinearCrossEntropy``).
        """
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size "
                             f"{self.config.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += T
        x = self.ln_f(x)
        if targets is None:
            return self.head(x), None
        if (not return_logits and reduction == "mean" and x.device.type == "cpu"
                and torch.is_grad_enabled()):
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
            loss = ChunkedLinearCrossEntropy.apply(x.reshape(-1, x.size(-1)), self.head.weight,
                                                   targets.reshape(-1), dtype)
            return None, loss
        logits = self.head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                               reduction=reduction)
        return (logits if return_logits else None), loss

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Where each token looks: the attention probabilities of every layer for ``idx`` (B, T).

        Returns one ``(B, n_head, T, T)`` tensor per layer; row ``t`` sums to 1 over the
        positions ``s <= t``. They are kept by the model's own forward pass, which computes
        attention by hand while they are asked for, on any device, so the maps are those of
        the real blocks; dropout is off meanwhile, and training never pays.
        """
        attns = [block.attn for block in self.blocks]
        was_training = self.training
        self.eval()
        try:
            for attn in attns:
                attn.keep_probs = True
            self(idx)
            return [attn.probs for attn in attns]
        finally:
            for attn in attns:
                attn.keep_probs, attn.probs = False, None
            self.train(was_training)

    # ------------------------------------------------------------------ sizes
    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, counting the tied embedding once; optionally without embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + self._positions()
        return n

    def _positions(self) -> int:
        return self.wpe.weight.numel() if self.wpe is not None else 0

    def num_params_by_part(self) -> dict[str, int]:
        """Parameters by part of the model; they add up to ``num_params()``.

        >>> model = GPT(GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=1, n_embd=2, dropout=0.0))
        >>> model.num_params_by_part()["MLP"]  # 2 -> 8 -> 2 with biases: 2*8 + 8 + 8*2 + 2
        42
        """
        norms = "LayerNorm" if self.config.norm == "layernorm" else "RMSNorm"
        parts = {"token embedding (= output head)": 0, "position embedding": 0,
                 "attention (qkv + projection)": 0, "MLP": 0, norms: 0}
        if self.wpe is None:  # rotary positions: no table
            del parts["position embedding"]
        for name, p in self.named_parameters():  # the tied head appears once, as wte
            part = ("token embedding (= output head)" if name.startswith("wte") else
                    "position embedding" if name.startswith("wpe") else
                    "attention (qkv + projection)" if ".attn." in name else
                    "MLP" if ".mlp." in name else norms)
            parts[part] += p.numel()
        return parts

    def flops_per_token(self, training: bool = True) -> float:
        """Matmul FLOPs per token: 2 per weight forward (x3 with backward) plus attention.

        Follows the PaLM appendix and nanoGPT's ``estimate_mfu``: 6N + 12 * L * T * d for a
        training step at full context. A token's query meets T keys (QK^T) and its
        attention weights meet T values (AV): T * d multiply-adds each, 4 * T * d FLOPs in all.
        """
        c = self.config
        n = self.num_params() - self._positions()
        attn = 4 * c.n_layer * c.block_size * c.n_embd  # QK^T and AV, forward, per token
        forward = 2 * n + attn
        return 3 * forward if training else forward

    def hidden_matrices(self) -> list[tuple[str, nn.Parameter]]:
        """The blocks' weight matrices, which Muon steps; the embeddings, positions, biases
        and gains stay with AdamW. Also what an optimizer's memory depends on: Muon keeps one
        momentum per number, AdamW two moments."""
        return [(n, p) for n, p in self.named_parameters()
                if p.requires_grad and n.startswith("blocks.") and p.dim() == 2]

    def configure_optimizer(self, learning_rate: float, weight_decay: float,
                            betas: tuple[float, float], optimizer: str = "adamw",
                            muon_momentum: float = 0.95) -> torch.optim.Optimizer | MuonWithAdamW:
        """AdamW with weight decay on matrices only: biases and norms are not shrunk.

        ``optimizer="muon"``: the blocks' weight matrices go to Muon (``tinylm.optim``), the
        embeddings, biases and gains stay with AdamW.
        """
        if optimizer not in ("adamw", "muon"):
            raise ValueError(f"unknown optimizer {optimizer!r}: adamw or muon")
        hidden = [p for _, p in self.hidden_matrices()] if optimizer == "muon" else []
        ids = {id(p) for p in hidden}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ]
        try:  # one kernel for the whole step instead of several per tensor, on a CPU too
            adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True)
        except (RuntimeError, TypeError):  # older torch: no fused AdamW for this device
            adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, foreach=True)
        if optimizer == "adamw":
            return adamw
        return MuonWithAdamW(Muon(hidden, learning_rate, muon_momentum, weight_decay), adamw)
