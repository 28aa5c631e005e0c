"""Sampling text from a trained model, one token at a time, with a KV cache.

Each step turns the last position's logits into a distribution (temperature), trims it
(top-k, top-p), discourages tokens already produced (repetition penalty), and draws one
token with a seeded generator. The language tag (``<|en|>``, ``<|es|>``) that starts every
training document is the first token of the prompt, which is how we choose the language.
"""
from __future__ import annotations

import torch

from tinylm.model import GPT, KVCache


def _next_token_logits(logits: torch.Tensor, generated: torch.Tensor, temperature: float,
                       top_k: int, top_p: float, repetition_penalty: float) -> torch.Tensor:
    """Apply the repetition penalty, temperature, top-k and top-p to one row of logits."""
    logits = logits.float().clone()
    if repetition_penalty != 1.0 and generated.numel():
        seen = logits[:, generated.unique()]
        logits[:, generated.unique()] = torch.where(seen > 0, seen / repetition_penalty,
                                                    seen * repetition_penalty)
    if temperature > 0:
        logits = logits / temperature
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


@torch.no_grad()
def generate_ids(model: GPT, prompt: list[int], max_new_tokens: int = 64, *,
                 temperature: float = 0.8, top_k: int = 50, top_p: float = 0.95,
                 repetition_penalty: float = 1.1, seed: int = 0, stop_id: int | None = None,
                 use_cache: bool = True) -> list[int]:
    """Continue ``prompt`` (token ids) by up to ``max_new_tokens``; returns only the new ids.

    With ``use_cache=False`` every step re-runs the whole (cropped) context: slower, and
    the reference that the cached path must equal token for token.
    """
    if not prompt:
        raise ValueError("the prompt needs at least one token (a language tag)")
    model.eval()
    device = next(model.parameters()).device
    block = model.config.block_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    cache = KVCache(model.config, 1, device) if use_cache else None
    new: list[int] = []
    pending = ids[:, -block:]  # tokens not yet fed through the model
    for _ in range(max_new_tokens):
        if cache is not None and cache.pos + pending.size(1) > block:
            cache.reset()  # context full: positions are absolute, so re-encode the last block
            pending = ids[:, -block:]
        logits, _ = model(pending if cache is not None else ids[:, -block:], cache=cache)
        logits = _next_token_logits(logits[:, -1], ids[0, len(prompt):], temperature, top_k,
                                    top_p, repetition_penalty)
        if temperature <= 0:
            token = logits.argmax(-1, keepdim=True)
        else:
            token = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=gen).to(device)
        ids = torch.cat([ids, token], dim=1)
        pending = token
        new.append(int(token))
        if stop_id is not None and new[-1] == stop_id:
            break
    return new


def generate(model: GPT, tokenizer, prompt: str = "", lang: str = "en", max_new_tokens: int = 64,
             *, temperature: float = 0.8, top_k: int = 50, top_p: float = 0.95,
             repetition_penalty: float = 1.1, seed: int = 0, use_cache: bool = True) -> str:
    """Text in language ``lang`` continuing ``prompt``; stops at ``<|endoftext|>``.

    >>> generate(model, tok, "In the beginning", lang="en")  # doctest: +SKIP
    ' God created the heaven and the earth...'
    """
    from tinylm.tokenizer import lang_id, special_ids

    eot = special_ids(tokenizer)["<|endoftext|>"]
    prompt_ids = [lang_id(tokenizer, lang)] + tokenizer.encode(prompt).ids
    new = generate_ids(model, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
                       stop_id=eot, use_cache=use_cache)
    if new and new[-1] == eot:
        new = new[:-1]
    return tokenizer.decode(new, skip_special_tokens=True)
