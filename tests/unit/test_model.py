"""Properties of the GPT and its sampler that must always hold."""
import pytest
import torch

import tinylm.model as model_module
from tinylm.generate import _candidates, generate_ids
from tinylm.model import GPT, GPTConfig, KVCache

CFG = GPTConfig(vocab_size=300, block_size=24, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
#: GPT-2 (CFG), Llama's changes, and Llama's with QK-norm (Qwen3's): what the properties that
#: depend on positions and attention are checked on.
LLAMA = dict(norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False)
ARCHS = {"gpt2": {}, "llama": LLAMA, "qwen3": LLAMA | {"qk_norm": True}}


def make_model(seed: int = 0, arch: str = "gpt2") -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**CFG.to_dict() | ARCHS[arch])).eval()
    if arch != "gpt2":  # gains off 1, so that a norm applied in the wrong place shows
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_causality_later_tokens_never_change_earlier_logits(arch):
    model = make_model(arch=arch)
    x = torch.randint(0, CFG.vocab_size, (2, 20))
    base, _ = model(x)
    for t in (5, 12, 19):
        y = x.clone()
        y[:, t:] = torch.randint(0, CFG.vocab_size, (2, 20 - t))
        changed, _ = model(y)
        assert torch.allclose(base[:, :t], changed[:, :t], atol=1e-6)
        assert not torch.allclose(base[:, t], changed[:, t])  # and position t does see its input


def test_causality_holds_under_bf16_autocast():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (1, 16))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % CFG.vocab_size
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, _ = model(x)
        b, _ = model(y)
    assert torch.equal(a[:, :10], b[:, :10])


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_forward_equals_full_forward(arch):
    model = make_model(arch=arch)
    x = torch.randint(0, CFG.vocab_size, (3, 18))
    full, _ = model(x)
    cache = KVCache(model.config, 3)
    parts = [model(x[:, a:b], cache=cache)[0] for a, b in ((0, 7), (7, 8), (8, 13), (13, 18))]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    assert cache.pos == 18


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_with_cache_equals_without_even_past_the_context(arch):
    model = make_model(1, arch)
    for kwargs in ({"temperature": 0.0}, {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 7}):
        # 40 new tokens from a 10-token prompt overflow block_size=24: the cache must re-encode
        with_cache = generate_ids(model, list(range(1, 11)), 40, **kwargs)
        without = generate_ids(model, list(range(1, 11)), 40, use_cache=False, **kwargs)
        assert with_cache == without
        assert len(with_cache) == 40


def test_generation_past_the_context_re_encodes_rarely():
    """Once the context is full, the cache keeps its last half and goes on one token at a
    time: about two tokens through the model per new token, not block_size of them."""
    model = make_model(1)
    fed = []
    model.register_forward_pre_hook(lambda module, args: fed.append(args[0].size(1)))
    new = generate_ids(model, list(range(1, 11)), 200, seed=3)
    assert len(new) == 200 and fed[0] == 10 and max(fed) <= CFG.block_size
    # every block_size - block_size // 2 + 1 = 13 new tokens cost block_size = 24 fed ones
    assert sum(fed) <= 10 + 2 * 200  # re-encoding the whole block per token would be ~4,600


def test_generation_past_the_context_keeps_the_language_tag_first():
    """Every training window opens with its language tag (data.TokenDataset.tags), so the
    context of a long generation keeps the prompt's first token at position 0."""
    model = make_model(1)
    for use_cache in (True, False):
        firsts = []
        hook = model.register_forward_pre_hook(
            lambda module, args, kwargs: firsts.append(args[0][0, 0].item())
            if kwargs.get("cache") is None or kwargs["cache"].pos == 0 else None, with_kwargs=True)
        generate_ids(model, [7, *range(20, 29)], 80, seed=1, use_cache=use_cache)
        hook.remove()
        assert len(firsts) > 1 and set(firsts) == {7}, use_cache  # every full encoding starts with it


def test_generation_is_seeded_and_stops_at_stop_token():
    model = make_model(2)
    a = generate_ids(model, [1, 2, 3], 30, seed=5)
    assert a == generate_ids(model, [1, 2, 3], 30, seed=5)
    assert a != generate_ids(model, [1, 2, 3], 30, seed=6)
    stop = a[3]
    b = generate_ids(model, [1, 2, 3], 30, seed=5, stop_id=stop)
    assert b == a[:a.index(stop) + 1]


def test_sampling_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    none = torch.tensor([], dtype=torch.long)
    values, ids = _candidates(logits, none, 1.0, 2, 1.0, 0.0, 1.0)  # top-k keeps the two best
    assert ids.tolist() == [[0, 1]] and values.tolist() == [[4.0, 3.0]]
    values, ids = _candidates(logits, none, 1.0, 0, 0.5, 0.0, 1.0)  # top-p: 0.64 of the mass is token 0
    assert ids[0, 0] == 0 and torch.isfinite(values[0, 0]) and torch.isinf(values[0, 1:]).all()
    values, ids = _candidates(logits, torch.tensor([0]), 1.0, 0, 1.0, 0.0, 8.0)  # penalty on token 0
    assert ids.tolist() == [[1, 2, 3, 0, 4]] and values[0, 3] == 0.5
    values, _ = _candidates(logits, none, 0.5, 0, 1.0, 0.0, 1.0)  # temperature sharpens
    assert values[0, 0] == 8.0


def kept(values: torch.Tensor, ids: torch.Tensor) -> set[int]:
    """The token ids that ``_candidates`` leaves a chance."""
    return set(ids[torch.isfinite(values)].tolist())


def test_min_p_keeps_the_tokens_at_least_min_p_times_as_likely_as_the_best():
    # probabilities in the ratios 1, 1/2, 1/4, 1/8, 1/16 of the likeliest (token 2)
    logits = torch.tensor([[1.0, 8.0, 16.0, 4.0, 2.0]]).log()
    none = torch.tensor([], dtype=torch.long)
    assert kept(*_candidates(logits, none, 1.0, 0, 1.0, 0.2, 1.0)) == {2, 1, 3}  # 1/4 and up
    assert kept(*_candidates(logits, none, 1.0, 0, 1.0, 0.1, 1.0)) == {2, 1, 3, 4}
    assert kept(*_candidates(logits, none, 1.0, 0, 1.0, 0.0, 1.0)) == {0, 1, 2, 3, 4}  # off
    assert kept(*_candidates(logits, none, 1.0, 0, 1.0, 0.9, 1.0)) == {2}
    # after temperature: at 0.5 the ratios are squared, 1, 1/4, 1/16, ...
    assert kept(*_candidates(logits, none, 0.5, 0, 1.0, 0.2, 1.0)) == {2, 1}
    # after top-k and top-p, which it cannot undo: the ratios to the best stay as they were
    assert kept(*_candidates(logits, none, 1.0, 2, 1.0, 0.1, 1.0)) == {2, 1}
    assert kept(*_candidates(logits, none, 1.0, 0, 0.5, 0.1, 1.0)) == {2}
    # min_p=1 keeps the likeliest token, and every token tied with it
    assert kept(*_candidates(logits, none, 1.0, 0, 1.0, 1.0, 1.0)) == {2}
    tied = torch.tensor([[3.0, 1.0, 3.0, 0.0]])
    assert kept(*_candidates(tied, none, 1.5, 0, 1.0, 1.0, 1.0)) == {0, 2}


def test_min_p_samples_only_the_tokens_it_keeps():
    """generate_ids draws from what _candidates keeps: with every step's logits fixed, min-p
    leaves three tokens, and sampling without it draws from the whole vocabulary."""
    model = make_model(2)
    row = torch.zeros(CFG.vocab_size)
    row[[5, 9, 17]] = torch.tensor([3.0, 2.5, 2.0])  # the rest: e^-3 = 0.05 of the best each
    hook = model.register_forward_hook(
        lambda module, args, out: (row.expand(*out[0].shape[:2], -1), out[1]))
    common = dict(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=3)
    assert set(generate_ids(model, [1, 2, 3], 100, min_p=0.2, **common)) == {5, 9, 17}
    assert len(set(generate_ids(model, [1, 2, 3], 100, min_p=0.0, **common)) - {5, 9, 17}) > 10
    hook.remove()


def test_top_p_zero_keeps_the_likeliest_token_as_transformers_does():
    """top_p=0 is in range, and transformers (an exported model) keeps the likeliest token
    alone for it: sampling at any temperature gives the greedy tokens, as it does there."""
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    values, ids = _candidates(logits, torch.tensor([], dtype=torch.long), 1.0, 0, 0.0, 0.0, 1.0)
    assert ids[0, 0] == 0 and torch.isfinite(values[0, 0]) and torch.isinf(values[0, 1:]).all()
    model = make_model(2)
    greedy = generate_ids(model, [1, 2, 3], 30, temperature=0.0)
    for seed in range(3):
        assert generate_ids(model, [1, 2, 3], 30, temperature=1.5, top_k=0, top_p=0.0,
                            seed=seed) == greedy


def test_init_and_sizes():
    model = make_model()
    # tied embeddings: the output head is the input embedding
    assert model.head.weight.data_ptr() == model.wte.weight.data_ptr()
    # d = 32: a block is qkv 3d^2 + 3d, proj d^2 + d, fc 4d^2 + 4d, proj 4d^2 + d and two
    # LayerNorms 4d, so 12d^2 + 13d = 12,704; then the final LayerNorm 2d = 64, the token
    # embedding 300 * 32 = 9,600 (counted once: the head is the same matrix), positions 24 * 32
    assert model.num_params() == 2 * 12_704 + 64 + 9_600 + 768  # 35,840
    assert model.num_params(non_embedding=True) == 2 * 12_704 + 64
    # residual projections start smaller than the other matrices (scaled by 1/sqrt(2L))
    assert model.blocks[0].attn.proj.weight.std() < 0.75 * model.blocks[0].attn.qkv.weight.std()
    # at init the loss is close to ln(vocab): the model knows nothing yet
    _, loss = model(torch.randint(0, CFG.vocab_size, (4, 24)), torch.randint(0, CFG.vocab_size, (4, 24)))
    assert abs(loss.item() - torch.log(torch.tensor(300.0)).item()) < 0.3


def test_flops_per_token_follow_palm_and_nanogpt():
    """6N + 12 * L * T * d per training token (nanoGPT's estimate_mfu), worked out by hand.

    N = 35,072 weights that multiply activations: 2 blocks of 12d^2 + 13d = 12,704, the final
    LayerNorm 64, the tied embedding/head 300 * 32 = 9,600 (positions are looked up, not
    multiplied). Attention adds QK^T and AV: 2 * 2 * T * d per layer forward, tripled in training.
    """
    model = make_model()
    assert model.flops_per_token(training=False) == 2 * 35_072 + 4 * 2 * 24 * 32  # 76,288
    assert model.flops_per_token() == 6 * 35_072 + 12 * 2 * 24 * 32  # 228,864


def test_weight_decay_only_on_matrices():
    model = make_model()
    opt = model.configure_optimizer(1e-3, 0.1, (0.9, 0.95))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() < 2 for p in plain["params"])


def test_bf16_training_path_matches_fp32(monkeypatch):
    """The step a CPU trains with under bf16 autocast (the fused attention in fp32, the chunked
    loss with bf16 matmuls) gives the fp32 loss and gradients up to bf16 rounding."""
    import tinylm.model as model_module

    kernels, loss_dtypes = [], []
    real_kernel, real_loss = model_module.attention_kernel, model_module.ChunkedLinearCrossEntropy.apply

    def kernel(*args, **kwargs):
        kernels.append(real_kernel(*args, **kwargs))
        return kernels[-1]

    def chunked(x, weight, targets, dtype):
        loss_dtypes.append(dtype)
        return real_loss(x, weight, targets, dtype)

    model = make_model(3)
    x = torch.randint(0, CFG.vocab_size, (4, 24))
    y = torch.randint(0, CFG.vocab_size, (4, 24))
    _, ref_loss = model(x, y)  # fp32, the plain loss over the whole batch's logits
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr(model_module, "attention_kernel", kernel)
    monkeypatch.setattr(model_module.ChunkedLinearCrossEntropy, "apply", chunked)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(x, y, return_logits=False)  # as train_step calls it
    loss.backward()
    assert set(kernels) == {"fused_fp32"} and len(kernels) == CFG.n_layer
    assert loss_dtypes == [torch.bfloat16]  # the chunked loss, its matmuls in bf16
    assert loss.dtype == torch.float32 and abs(loss.item() - ref_loss.item()) < 0.02
    for name, p in model.named_parameters():
        ref = ref_grads[name]
        assert p.grad.dtype == torch.float32, name
        assert (p.grad - ref).norm() <= 0.05 * ref.norm() + 1e-6, name


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_maps_are_the_probabilities_the_forward_pass_uses(arch):
    model = make_model(4, arch)
    B, T, C, H = 2, 20, CFG.n_embd, CFG.n_head
    x = torch.randint(0, CFG.vocab_size, (B, T))
    seen = {}  # each attention layer's input and output in the normal forward (fused kernel)
    hooks = [block.attn.register_forward_hook(lambda m, args, out, i=i: seen.update({i: (args[0], out)}))
             for i, block in enumerate(model.blocks)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    model.train()
    maps = model.attention_maps(x)
    assert model.training and len(maps) == CFG.n_layer
    for i, (probs, block) in enumerate(zip(maps, model.blocks)):
        assert probs.shape == (B, H, T, T)
        assert torch.all(probs.triu(1) == 0)  # causal: nothing on later tokens
        assert torch.allclose(probs.sum(-1), torch.ones(B, H, T))
        assert block.attn.probs is None and not block.attn.keep_probs  # training keeps nothing
        layer_in, layer_out = seen[i]
        with torch.no_grad():
            v = block.attn.qkv(layer_in)[..., 2 * C:].view(B, T, H, C // H).transpose(1, 2)
            mixed = block.attn.proj((probs @ v).transpose(1, 2).reshape(B, T, C))
        assert torch.allclose(mixed, layer_out, atol=1e-5)


def test_rotary_positions_make_attention_depend_on_distance_only():
    """A query and a key rotated to positions (i, j) meet as at (i + s, j + s); and not as
    at another distance. Position 0 is not rotated at all."""
    rotary = model_module.Rotary(head_dim=8, block_size=32)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i: int, j: int) -> float:
        return (rotary(q, i) * rotary(k, j)).sum().item()

    assert score(5, 2) == pytest.approx(score(20, 17), abs=1e-5)
    assert score(5, 2) == pytest.approx(score(3, 0), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    assert torch.equal(rotary(q, 0), q)


def test_each_architecture_setting_changes_the_layers_it_names():
    """Every setting alone: the layers it names change and nothing else does; the gated
    feed-forward keeps about the weights of GPT-2's; a model given only its sizes is GPT-2."""
    base = dict(vocab_size=300, block_size=24, n_layer=1, n_head=2, n_embd=48, dropout=0.0)
    assert GPTConfig(**base).is_gpt2
    gpt2 = dict(GPT(GPTConfig(**base)).named_parameters())
    shapes = {n: tuple(p.shape) for n, p in gpt2.items()}

    def differs(**change) -> dict[str, tuple]:
        config = GPTConfig(**base, **change)
        assert not config.is_gpt2
        model = {n: tuple(p.shape) for n, p in GPT(config).named_parameters()}
        return {n: model.get(n) for n in shapes.keys() | model.keys() if model.get(n) != shapes.get(n)}

    assert differs(norm="rmsnorm") == {f"{m}.bias": None for m in ("blocks.0.ln1", "blocks.0.ln2", "ln_f")}
    assert differs(positions="rotary") == {"wpe.weight": None}
    # 8/3 of 48 is 128, a multiple of 32 already: gate and value side by side in fc
    assert differs(mlp="swiglu") == {"blocks.0.mlp.fc.weight": (256, 48), "blocks.0.mlp.fc.bias": (256,),
                                     "blocks.0.mlp.proj.weight": (48, 128)}
    assert differs(qk_norm=True) == {"blocks.0.attn.q_norm.weight": (24,), "blocks.0.attn.k_norm.weight": (24,)}
    assert set(differs(bias=False)) == {n for n in shapes if n.endswith(".bias")} and all(
        v is None for v in differs(bias=False).values())
    assert GPTConfig(**base, mlp="swiglu").mlp_hidden * 3 == GPTConfig(**base).mlp_hidden * 2
    assert GPTConfig(**{**base, "n_embd": 128}, mlp="swiglu").mlp_hidden == 352  # 341.3 rounded up


def test_parameters_by_part_follow_the_closed_form():
    model = make_model()
    V, T, L, C = CFG.vocab_size, CFG.block_size, CFG.n_layer, CFG.n_embd
    parts = model.num_params_by_part()
    assert parts == {"token embedding (= output head)": V * C, "position embedding": T * C,
                     "attention (qkv + projection)": L * (4 * C * C + 4 * C),  # qkv, proj, biases
                     "MLP": L * (8 * C * C + 5 * C),  # C -> 4C -> C, biases
                     "LayerNorm": L * 2 * 2 * C + 2 * C}  # two per block and the final one
    assert sum(parts.values()) == model.num_params()
    llama = make_model(arch="llama")  # no position table, RMSNorm gains only, no biases
    H = llama.config.mlp_hidden
    assert llama.num_params_by_part() == {"token embedding (= output head)": V * C,
                                          "attention (qkv + projection)": L * 4 * C * C,
                                          "MLP": L * 3 * C * H, "RMSNorm": L * 2 * C + C}
    assert llama.num_params(non_embedding=True) == llama.num_params() - V * C


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_loss_has_the_plain_losss_value_and_gradients(monkeypatch, dtype):
    """The training step's loss, computed chunk by chunk without the batch's logits, is the
    plain cross-entropy: same value, same gradient on every parameter (the tied output
    matrix included), in fp32 and under bf16 autocast, with a last chunk shorter than the
    others."""
    monkeypatch.setattr(model_module, "LOSS_CHUNK_ELEMENTS", 40 * CFG.vocab_size)  # 40 rows
    model = make_model(5)
    x = torch.randint(0, CFG.vocab_size, (5, 22))  # 110 rows: 40 + 40 + 30
    y = torch.randint(0, CFG.vocab_size, (5, 22))
    results = []
    for return_logits in (True, False):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits, loss = model(x, y, return_logits=return_logits)
        (3.0 * loss).backward()  # the backward pass scales by the incoming gradient
        results.append((logits, loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (logits, plain_loss, plain_grads), (no_logits, chunked_loss, chunked_grads) = results
    assert logits is not None and no_logits is None
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-5)
    for name, grad in plain_grads.items():
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert torch.allclose(chunked_grads[name], grad, rtol=tol, atol=tol * grad.abs().max().item()), name


def test_without_logits_evaluation_and_per_token_losses_still_work():
    """``return_logits=False`` drops the logits, never the loss asked for: per-token losses
    stay per token, and a loss without gradients (evaluation) is the same mean."""
    model = make_model(6)
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    with torch.no_grad():
        _, loss = model(x, x, return_logits=False)
    _, per_token = model(x, x, reduction="none", return_logits=False)
    assert per_token.shape == (32,) and loss.item() == pytest.approx(per_token.mean().item(), rel=1e-5)
