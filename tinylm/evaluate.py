"""How good is the model? Loss, perplexity and bits per byte per language; sample quality.

Loss in nats per token depends on the tokenizer (a bigger vocabulary makes fewer, harder
tokens), so we also report bits per byte: the loss spread over the UTF-8 bytes the tokens
stand for, comparable across vocabularies and languages. Samples are judged by the share of
repeated 4-grams (loops), distinct-2 (variety) and which language their words belong to.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable

import numpy as np
import torch

from tinylm.config import SAMPLING
from tinylm.data import TokenDataset, language_of_positions
from tinylm.errors import ValidationError
from tinylm.generate import generate
from tinylm.runtime import autocast


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: TokenDataset, spans: list, languages: list[str],
             tokens_per_byte: dict[str, float], batch_size: int = 32,
             device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
             rank: int = 0, world_size: int = 1,
             total: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Mean loss over every window of ``dataset``, overall and per language.

    Returns ``{"loss", "perplexity", "bpb", "by_lang": {lang: {"loss", "perplexity", "bpb",
    "tokens"}}}``. ``spans`` (from the token stage's meta.json) map stream positions to
    languages; ``tokens_per_byte`` converts nats per token into bits per byte: a language's
    tokens stand for tokens / tokens_per_byte bytes.

    With ``world_size`` training processes, each evaluates every ``world_size``-th batch
    (the same batches one process would, so the same per-token losses) and ``total`` adds
    up the sums of losses and counts per language over the processes (the trainer's team,
    ``tinylm.train.Solo.sum``): every process gets the figures one process would have computed.
    """
    was_training = model.training
    model.eval()
    sums = np.zeros(len(languages))
    counts = np.zeros(len(languages))
    for start in range(rank * batch_size, len(dataset), world_size * batch_size):
        idx = np.arange(start, min(start + batch_size, len(dataset)))
        x, y = dataset.batch(idx)
        with autocast(device, dtype):
            _, loss = model(x.to(device), y.to(device), reduction="none")
        lang = language_of_positions(spans, dataset.target_positions(idx), languages).reshape(-1)
        losses = loss.float().cpu().numpy()
        sums += np.bincount(lang, weights=losses, minlength=len(languages))
        counts += np.bincount(lang, minlength=len(languages))
    model.train(was_training)
    if world_size > 1:
        sums, counts = np.split(total(np.concatenate([sums, counts])), 2)
    by_lang = {}
    for i, lang in enumerate(languages):
        if counts[i]:
            mean = sums[i] / counts[i]
            by_lang[lang] = _figures(mean, tokens_per_byte.get(lang, math.nan)) | {"tokens": int(counts[i])}
    # All the nats over all the bytes: the mean loss times a mean tokens-per-byte is not
    # that when the languages differ in both loss and bytes per token.
    n_tokens = counts.sum()
    n_bytes = sum(counts[i] / tokens_per_byte.get(l, math.nan) for i, l in enumerate(languages) if counts[i])
    overall = _figures(sums.sum() / max(n_tokens, 1), n_tokens / n_bytes if n_bytes else 0.0)
    return overall | {"by_lang": by_lang}


def _figures(loss: float, tokens_per_byte: float) -> dict:
    return {"loss": float(loss), "perplexity": float(math.exp(min(loss, 50))),
            "bpb": float(loss * tokens_per_byte / math.log(2))}


# ----------------------------------------------------------------- sample quality
_WORD = re.compile(r"\w+", re.UNICODE)

#: The most frequent short words of each language: enough to tell them apart in a sample.
STOPWORDS = {
    "en": set("the and of to that in he shall unto for i his a they be is him not them it with all thou".split()),
    "es": set("de y que el la los en a por las su se no con al del le lo para sus mas como".split()),
    "fr": set("de et la le les à il des que en l ne ils qui pour sur d est un une".split()),
    "de": set("und der die das zu er den ich sie nicht von dem mit ist des sich ein auf".split()),
    "it": set("e di il che la a le non per i del da in un si gli con lo suo".split()),
}


def sample_quality(text: str) -> dict:
    """Repetition and diversity of a generated text, computed on its words.

    ``repeated_4grams``: share of word 4-grams that already appeared earlier in the text
    (0 = no loops, near 1 = one phrase over and over). ``distinct_2``: distinct word
    bigrams / all bigrams (higher = more varied).

    >>> sample_quality("a b c d a b c d a b c d")["repeated_4grams"]
    0.5555555555555556
    """
    words = _WORD.findall(text.lower())
    grams4 = list(zip(*(words[i:] for i in range(4))))
    grams2 = list(zip(words, words[1:]))
    repeated = len(grams4) - len(set(grams4))
    return {
        "words": len(words),
        "repeated_4grams": repeated / len(grams4) if grams4 else 0.0,
        "distinct_2": len(set(grams2)) / len(grams2) if grams2 else 0.0,
    }


def detect_language(text: str, languages: list[str] | None = None) -> str | None:
    """The language whose common words are most frequent in ``text`` (None if no evidence)."""
    words = Counter(_WORD.findall(text.lower()))
    scores = {lang: sum(words[w] for w in STOPWORDS[lang])
              for lang in (languages or list(STOPWORDS)) if lang in STOPWORDS}
    if not scores or max(scores.values()) == 0:
        return None
    return max(scores, key=scores.get)


def vocabulary(text: str) -> set[str]:
    """The words of a text, lower-cased: what ``unknown_words`` compares samples with."""
    return set(_WORD.findall(text.lower()))


def unknown_words(texts: list[str], known: set[str]) -> tuple[int, int]:
    """``(unknown, total)``: how many words of the generated texts never occur in the
    training text. A model that spells well invents few; one that strings sub-word pieces
    together at random invents many.

    >>> unknown_words(["the lord said", "the lorf"], vocabulary("The LORD said unto Moses"))
    (1, 5)
    """
    words = [w for text in texts for w in _WORD.findall(text.lower())]
    return sum(w not in known for w in words), len(words)


#: Prompts that start samples, per language (the language tag is added by ``generate``).
PROMPTS = {"en": ["And the", "In the beginning", "The Lord"],
           "es": ["Y el", "En el principio", "El Señor"],
           "fr": ["Et le", "Au commencement", "Le Seigneur"],
           "de": ["Und der", "Im Anfang", "Der Herr"],
           "it": ["E il", "Nel principio", "Il Signore"]}


def sample_report(model, tokenizer, cfg, per_language: int) -> dict:
    """Samples in every language of ``cfg`` with their quality figures and pass/fail.

    A sample passes when its share of repeated 4-grams is at most
    ``cfg.max_repeated_4grams`` and its words are detected as the requested language. A
    language without a list of common words (``STOPWORDS``) cannot be detected: its
    samples' language is "not measured" (listed in ``language_not_measured``), never
    failed, so that a corpus in such a language can pass on repetition alone.
    """
    samples = []
    for lang in cfg.languages:
        measured = lang in STOPWORDS
        prompts = PROMPTS.get(lang, [""])
        for i in range(per_language):
            prompt = prompts[i % len(prompts)]
            text = generate(model, tokenizer, prompt, lang, cfg.sample_new_tokens,
                            temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                            min_p=cfg.min_p, repetition_penalty=cfg.repetition_penalty,
                            seed=cfg.seed + i)
            quality = sample_quality(prompt + text)
            detected = detect_language(prompt + text, cfg.languages) if measured else None
            samples.append({"lang": lang, "prompt": prompt, "text": text, **quality,
                            "detected_lang": detected,
                            "language_check": "measured" if measured else "not measured",
                            "passed": quality["repeated_4grams"] <= cfg.max_repeated_4grams
                            and (detected == lang or not measured)})
    return {"settings": {k: getattr(cfg, k) for k in SAMPLING},
            "max_repeated_4grams": cfg.max_repeated_4grams,
            "language_not_measured": [lang for lang in cfg.languages if lang not in STOPWORDS],
            "samples": samples, "passed": all(s["passed"] for s in samples)}


def training_checks(metrics: dict, max_val_loss: float = 5.0, max_gap: float = 0.5) -> dict:
    """The acceptance checks of a finished run, from its ``training_metrics.json``.

    Final validation loss below ``max_val_loss``; validation minus training loss below
    ``max_gap`` (no overfitting); mean training loss lower at every epoch than before.

    A run stopped before its first epoch ended has no figures yet: every check is listed
    with ``value`` None and a ``note`` saying so, and none passes.
    """
    h = metrics.get("history") or []
    names = ("final validation loss", "validation - training loss", "training loss falls every epoch")
    if not h:
        note = "not measured: no epoch has finished yet"
        return {"checks": [{"name": n, "value": None, "limit": limit, "passed": False, "note": note}
                           for n, limit in zip(names, (max_val_loss, max_gap, 0))],
                "passed": False, "note": note}
    train = [e["train_loss"] for e in h]
    final = h[-1]
    checks = [
        {"name": names[0], "value": final["val_loss"], "limit": max_val_loss,
         "passed": final["val_loss"] < max_val_loss},
        {"name": names[1], "value": final["val_loss"] - final["train_loss"],
         "limit": max_gap, "passed": final["val_loss"] - final["train_loss"] < max_gap},
        {"name": names[2], "value": sum(b < a for a, b in zip(train, train[1:])),
         "limit": len(train) - 1, "passed": all(b < a for a, b in zip(train, train[1:]))},
    ]
    return {"checks": checks, "passed": all(c["passed"] for c in checks)}


def describe_check(check: dict) -> str:
    """One check as a line of text: its figure against its limit, or why it has none."""
    if check["value"] is None:
        return f"{check['name']}: {check.get('note', 'not measured')}"
    return f"{check['name']} = {check['value']:.3f} (limit {check['limit']})"


def raise_if_checks_failed(checks: dict, samples: dict, samples_path: str = "samples.json") -> None:
    """Stop with ``ValidationError`` (exit 5) when a training check or a sample failed."""
    if not checks["passed"]:
        bad = "; ".join(describe_check(c) for c in checks["checks"] if not c["passed"])
        raise ValidationError(f"training checks failed: {bad}",
                              "see chapter 8 (troubleshooting): train longer, lower the learning "
                              "rate, or add dropout or use a smaller model if it overfits.")
    if not samples["passed"]:
        raise ValidationError("some samples repeat themselves or are in the wrong language "
                              f"(see {samples_path})",
                              "train longer, or raise --repetition-penalty / lower --temperature.")
