"""Sampling text from a trained model, one token at a time, with a KV cache.

Each step discourages the tokens already produced (repetition penalty), turns the last
position's logits into a distribution (temperature), trims it (top-k, top-p, min-p), and
draws one token with a seeded generator. The language tag (``<|en|>``, ``<|es|>``) that
starts every training document is the first token of the prompt, which is how we choose the
language.
"""
from __future__ import annotations

import torch

from tinylm.config import default
from tinylm.model import GPT, KVCache


def _candidates(logits: torch.Tensor, generated: torch.Tensor, temperature: float, top_k: int,
                top_p: float, min_p: float,
                repetition_penalty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens that may come next, best first, and their adjusted logits (-inf: dropped).

    Applies the repetition penalty and temperature to one row of logits, keeps the ``top_k``
    best (all if 0), then the smallest prefix of them holding ``top_p`` of the probability
    (at least the best token: ``top_p=0`` keeps it alone, as transformers does), then those
    at least ``min_p`` times as likely as the best (min-p: 0 keeps them all, and it never
    drops the best nor a token tied with it). Unlike a count or a mass, min-p's cut follows
    the model's confidence: a sure step keeps few tokens, an unsure one many, and the
    unlikely tail it drops is where invented words start. The ratio of two probabilities
    does not depend on which tokens the softmax covers, so min-p drops the same tokens after
    top-k and top-p as from the whole vocabulary, as transformers' ``MinPLogitsWarper`` does
    after its own top-k and top-p (an exported model samples alike).
    Working on the top-k candidates only keeps the cost of a step nearly independent of
    the vocabulary size: no sort of every logit for every token.
    """
    logits = logits.float()
    if repetition_penalty != 1.0 and generated.numel():
        logits = logits.clone()
        seen = generated.unique()
        values = logits[:, seen]
        logits[:, seen] = torch.where(values > 0, values / repetition_penalty,
                                      values * repetition_penalty)
    if temperature > 0:
        logits = logits / temperature
    k = top_k if 0 < top_k < logits.size(-1) else logits.size(-1)
    values, ids = torch.topk(logits, k)  # sorted, best first
    if top_p < 1:
        probs = values.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the token that crosses top_p
        values = values.masked_fill(drop, float("-inf"))
    if min_p > 0:
        probs = values.softmax(-1)
        values = values.masked_fill(probs < min_p * probs[:, :1], float("-inf"))
    return values, ids


@torch.inference_mode()
def generate_ids(model: GPT, prompt: list[int],
                 max_new_tokens: int = default("sample_new_tokens"), *,
                 temperature: float = default("temperature"), top_k: int = default("top_k"),
                 top_p: float = default("top_p"), min_p: float = default("min_p"),
                 repetition_penalty: float = default("repetition_penalty"),
                 seed: int = default("seed"), stop_id: int | None = None,
                 use_cache: bool = True) -> list[int]:
    """Continue ``prompt`` (token ids) by up to ``max_new_tokens``; returns only the new ids.

    The model sees at most ``block_size`` tokens, and, as in every training window, the
    prompt's first token (the language tag) at position 0. When the context is full it
    keeps the tag and drops the older half of the rest: positions are absolute, so the
    cached keys and values are no longer valid and the kept tokens are re-encoded once; the
    next block_size / 2 tokens are one-token steps again. (Sliding by one token would
    re-encode the whole block for every new token.) With ``use_cache=False`` every step
    re-runs the whole context: slower, and the reference that the cached path must equal
    token for token.
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
    start = max(1, len(prompt) - (block - 1))  # the context is the tag, then ids[start:]
    for _ in range(max_new_tokens):
        if 1 + ids.size(1) - start > block:  # full: keep the tag and the newer half
            start = ids.size(1) - max(1, block // 2 - 1)
            if cache is not None:
                cache.reset()
        context = torch.cat([ids[:, :1], ids[:, start:]], dim=1)
        if cache is not None:  # feed only the tokens the cache has not seen
            logits, _ = model(context[:, cache.pos:], cache=cache)
        else:
            logits, _ = model(context)
        values, candidates = _candidates(logits[:, -1], ids[0, len(prompt):], temperature,
                                         top_k, top_p, min_p, repetition_penalty)
        if temperature <= 0:
            token = candidates[:, :1]
        else:
            pick = torch.multinomial(values.softmax(-1).cpu(), 1, generator=gen).to(device)
            token = candidates.gather(1, pick)
        ids = torch.cat([ids, token], dim=1)
        new.append(int(token))
        if stop_id is not None and new[-1] == stop_id:
            break
    return new


def generate(model: GPT, tokenizer, prompt: str = "", lang: str = "en",
             max_new_tokens: int = default("sample_new_tokens"), *,
             temperature: float = default("temperature"), top_k: int = default("top_k"),
             top_p: float = default("top_p"), min_p: float = default("min_p"),
             repetition_penalty: float = default("repetition_penalty"),
             seed: int = default("seed"), use_cache: bool = True) -> str:
    """Text in language ``lang`` continuing ``prompt``; stops at ``<|endoftext|>``. The
    sampling settings default to those of ``Config``.

    >>> generate(model, tok, "In the beginning", lang="en")  # doctest: +SKIP
    ' God created the heaven and the earth...'
    """
    from tinylm.tokenizer import lang_id, special_ids  # tokenizers: not in the budget's measured process

    eot = special_ids(tokenizer)["<|endoftext|>"]
    prompt_ids = [lang_id(tokenizer, lang)] + tokenizer.encode(prompt).ids
    new = generate_ids(model, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                       seed=seed, stop_id=eot, use_cache=use_cache)
    if new and new[-1] == eot:
        new = new[:-1]
    return tokenizer.decode(new, skip_special_tokens=True)
