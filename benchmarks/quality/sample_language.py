"""Do samples stay in their language and in real words? Judged from outside the library.

For each language of a run: ``--per-language`` samples (half with an empty prompt, half with
the library's short prompts, each with its own seed), classified by langid (an outside
detector, restricted to the run's languages), and every generated word looked up in the
run's training text.

    python benchmarks/quality/sample_language.py runs/default
    python benchmarks/quality/sample_language.py runs/default --per-language 20 --json benchmarks/quality/sample_language.json
    python benchmarks/quality/sample_language.py runs/seeds/1337 runs/seeds/1 runs/seeds/2 --json out.json

With several runs, the JSON holds each run's figures under ``runs``: how much the shares
move between models trained with other seeds. ``--grid`` compares sampler settings: each
one (keys ``temperature``, ``top_p``, ``min_p``, ``repetition_penalty``) on every run given,
one line per setting, and in the JSON under ``grid`` with its runs' figures, their mean
shares and their totals:

    python benchmarks/quality/sample_language.py runs/seeds-laptop/1337 runs/seeds-laptop/1 runs/seeds-laptop/2 --per-language 100 --grid temperature=0.8,min_p=0 temperature=0.8,min_p=0.05 --json benchmarks/quality/sample_language_sampler_grid.json
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

#: The sampler settings a census may change (flags, and the keys of ``--grid``).
SAMPLER = ("temperature", "top_p", "min_p", "repetition_penalty")


def census(run_dir: Path, per_language: int = 20, seed: int = 0, **sampling: float) -> dict:
    """Samples of every language of the run, with langid's verdict and unknown words; with the
    run's own sampler settings, except those given in ``sampling`` (``temperature``,
    ``top_p``, ``min_p``, ``repetition_penalty``)."""
    import langid

    from tinylm.config import Config
    from tinylm.evaluate import PROMPTS, sample_quality, unknown_words, vocabulary
    from tinylm.generate import generate
    from tinylm.stages import Run

    cfg = Config.load(run_dir / "config.json").replace(
        **{k: v for k, v in sampling.items() if v is not None})
    run = Run(run_dir, cfg, resume=True, progress=False)
    model, _ = run.trained_model()
    tokenizer = run.tokenizer()
    known = vocabulary((run.corpus_dir / "train.txt").read_text(encoding="utf-8"))
    langid.set_languages(cfg.languages)
    samples = []
    for lang in cfg.languages:
        prompts = [""] * (per_language - per_language // 2) + [
            PROMPTS[lang][i % len(PROMPTS[lang])] for i in range(per_language // 2)]
        for i, prompt in enumerate(prompts):
            text = generate(model, tokenizer, prompt, lang, cfg.sample_new_tokens,
                            temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                            min_p=cfg.min_p, repetition_penalty=cfg.repetition_penalty,
                            seed=seed + i)
            detected = langid.classify(prompt + text)[0] if (prompt + text).strip() else None
            samples.append({"lang": lang, "prompt": prompt, "seed": seed + i, "text": text,
                            "detected": detected,
                            "opens_in_capitals": bool(re.match(r"\W*[^\W\d_]{2,}\b", text)
                                                      and re.match(r"\W*([^\W\d_]+)", text)[1].isupper())})
    unknown, total = unknown_words([s["text"] for s in samples], known)
    # how varied the words are: a colder sampler invents fewer words, and also repeats more
    distinct = len(vocabulary(" ".join(s["text"] for s in samples)))
    # and whether it loops: the share of word 4-grams a sample repeats, as the library checks it
    loops = [sample_quality(s["text"])["repeated_4grams"] for s in samples]
    return {"run": str(run_dir), "per_language": per_language, "temperature": cfg.temperature,
            "top_p": cfg.top_p, "min_p": cfg.min_p, "repetition_penalty": cfg.repetition_penalty,
            "in_language": sum(s["detected"] == s["lang"] for s in samples),
            "samples_total": len(samples), "known_word_share": 1 - unknown / max(total, 1),
            "words": total, "distinct_word_share": distinct / max(total, 1),
            "open_in_capitals": sum(s["opens_in_capitals"] for s in samples),
            "repeated_4grams_mean": sum(loops) / len(loops), "repeated_4grams_max": max(loops),
            "looping": sum(share > cfg.max_repeated_4grams for share in loops),
            "samples": samples}


def sampler_setting(text: str) -> dict[str, float]:
    """One setting of ``--grid``, ``temperature=0.8,min_p=0``, as census's keywords."""
    try:
        setting = {k.strip(): float(v) for k, v in (pair.split("=") for pair in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write key=value pairs joined by commas") from None
    unknown = sorted(set(setting) - set(SAMPLER))
    if unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(unknown)} is none of {', '.join(SAMPLER)}")
    return setting


def grid_census(run_dirs: list[Path], per_language: int, setting: dict[str, float]) -> dict:
    """The figures of every run at one sampler setting, their mean shares and their totals."""
    runs = [{k: v for k, v in census(run_dir, per_language, **setting).items() if k != "samples"}
            for run_dir in run_dirs]
    return {"sampling": setting, "runs": runs,
            **{f"mean_{k}": sum(r[k] for r in runs) / len(runs)
               for k in ("known_word_share", "distinct_word_share")},
            **{k: sum(r[k] for r in runs) for k in ("in_language", "samples_total", "looping")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, nargs="+")
    p.add_argument("--per-language", type=int, default=20)
    p.add_argument("--temperature", type=float, default=None,
                   help="sample at this temperature (default: each run's own setting)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus mass (default: the run's)")
    p.add_argument("--min-p", type=float, default=None,
                   help="drop tokens less likely than this share of the likeliest (default: the run's)")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="penalty on tokens already produced (default: the run's)")
    p.add_argument("--grid", type=sampler_setting, nargs="+", default=None, metavar="SETTING",
                   help="sampler settings to compare on every run, e.g. temperature=0.8,min_p=0 "
                   "(over the flags above)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args()
    given = {k: getattr(a, k) for k in SAMPLER if getattr(a, k) is not None}
    if a.grid:
        grid = []
        for setting in a.grid:
            grid.append(row := grid_census(a.run_dir, a.per_language, given | setting))
            print(f"{','.join(f'{k}={v:g}' for k, v in row['sampling'].items())}: in the requested "
                  f"language: {row['in_language']}/{row['samples_total']}; generated words found in "
                  f"the training text: {100 * row['mean_known_word_share']:.1f}% "
                  f"({100 * row['mean_distinct_word_share']:.1f}% distinct; means over the "
                  f"runs); samples above the limit of repeated 4-grams: {row['looping']}",
                  flush=True)
        if a.json:
            a.json.write_text(json.dumps({"grid": grid}, indent=2) + "\n")
        return
    figures = []
    for run_dir in a.run_dir:
        result = census(run_dir, a.per_language, **given)
        for s in result["samples"]:
            mark = "ok " if s["detected"] == s["lang"] else "MISS"
            print(f"{mark} {s['lang']}->{s['detected']} {s['prompt']!r:20} {(s['prompt'] + s['text'])[:90]!r}")
        print(f"\n{run_dir}: in the requested language: {result['in_language']}/{result['samples_total']}; "
              f"generated words found in the training text: {100 * result['known_word_share']:.1f}% "
              f"of {result['words']} ({100 * result['distinct_word_share']:.0f}% distinct); "
              f"samples opening with a word in capitals: {result['open_in_capitals']}; repeated 4-grams: "
              f"{100 * result['repeated_4grams_mean']:.1f}% on average, {100 * result['repeated_4grams_max']:.0f}% "
              f"at most, {result['looping']} samples above the run's limit\n")
        figures.append({k: v for k, v in result.items() if k != "samples"})
    if a.json:
        out = figures[0] if len(figures) == 1 else {"runs": figures}
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
