"""Muon (tinylm.optim): the orthogonalization, which parameters it takes, and that a run
with it saves, resumes and refuses like one with AdamW."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tinylm.config import load_preset
from tinylm.errors import TrainingError
from tinylm.model import GPT, GPTConfig
from tinylm.optim import Muon, MuonWithAdamW, orthogonalize
from tinylm.train import Trainer

from test_trainer import TINY, _tokens

MUON = dict(TINY, optimizer="muon")


@pytest.mark.parametrize("shape", [(8, 32), (32, 8), (16, 16)], ids=["wide", "tall", "square"])
def test_orthogonalize_sets_every_singular_value_near_one_and_keeps_the_directions(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape) * 1e3  # the scale of the gradient does not matter
    o = orthogonalize(g)
    assert o.shape == g.shape and o.dtype == g.dtype
    s = torch.linalg.svdvals(o)
    assert bool(((s > 0.6) & (s < 1.3)).all()), s
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    # the same singular vectors: U^T O V is diagonal (up to the iteration's approximation)
    core = u.T @ o @ vh.T
    off = core - torch.diag(torch.diagonal(core))
    assert float(off.abs().max()) < 0.05 * float(torch.diagonal(core).abs().min())


def test_muon_takes_the_blocks_matrices_and_adamw_everything_else():
    model = GPT(GPTConfig.from_config(load_preset("quick", **TINY)))
    opt = model.configure_optimizer(1e-3, 0.1, (0.9, 0.95), "muon")
    assert isinstance(opt, MuonWithAdamW)
    names = {p: n for n, p in model.named_parameters()}
    muon = [names[p] for g in opt.muon.param_groups for p in g["params"]]
    adamw = [names[p] for g in opt.adamw.param_groups for p in g["params"]]
    assert sorted(muon + adamw) == sorted(names.values())  # each parameter exactly once
    assert sorted(muon) == sorted(n for n, p in model.named_parameters()
                                  if n.startswith("blocks.") and p.dim() == 2)
    assert sorted(muon) == sorted(n for n, _ in model.hidden_matrices())  # what chapter 10 counts
    assert "wte.weight" in adamw and "wpe.weight" in adamw
    with pytest.raises(ValueError, match="2-D"):
        Muon([model.ln_f.weight], lr=1e-3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        model.configure_optimizer(1e-3, 0.1, (0.9, 0.95), "sgd")


def test_a_muon_step_moves_each_matrix_by_an_orthogonal_step_of_the_adjusted_rate():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 32))
    before = w.detach().clone()
    w.grad = torch.randn(8, 32)
    Muon([w], lr=0.01, momentum=0.0, weight_decay=0.0).step()
    step = (before - w.detach()) / (0.01 * 0.2 * 32 ** 0.5)
    assert torch.allclose(step, orthogonalize(w.grad), atol=1e-4)  # weights of 1 in fp32


def test_matrices_of_one_shape_share_their_iterations_and_step_as_if_alone():
    torch.manual_seed(0)
    shapes = [(16, 8), (8, 16), (16, 8), (8, 8)]  # a tall one shares with its transpose's shape
    together = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    alone = [torch.nn.Parameter(w.detach().clone()) for w in together]
    start = [w.detach().clone() for w in together]
    for a, b in zip(together, alone):
        a.grad = torch.randn(a.shape)
        b.grad = a.grad.clone()
    Muon(together, lr=0.02, weight_decay=0.1).step()
    for w in alone:
        Muon([w], lr=0.02, weight_decay=0.1).step()
    for a, b, before in zip(together, alone, start):
        assert torch.allclose(a, b, atol=1e-6)
        assert (a - before).abs().max() > 1e-3  # it moved
    stack = torch.randn(3, 8, 24)
    assert torch.allclose(orthogonalize(stack), torch.stack([orthogonalize(m) for m in stack]),
                          atol=1e-6)


def test_a_run_with_muon_learns_and_resumes_exactly(tmp_path):
    cfg = load_preset("quick", **MUON)
    tokens = _tokens(tmp_path / "tokens")
    whole = Trainer(cfg, tokens, progress=False)
    x, y = whole.train_data.batch(np.arange(4))
    first = whole.train_step(x, y, 3e-3).loss
    for _ in range(5):
        last = whole.train_step(x, y, 3e-3).loss
    assert last < first  # it learns the repeated batch

    # stopped after 3 steps, resumed from the state, 3 more: the same weights as 6 in a row
    a = Trainer(cfg, tokens, progress=False)
    for _ in range(3):
        a.train_step(x, y, 3e-3)
    state = copy.deepcopy(a.state_dict())
    b = Trainer(cfg, tokens, progress=False, resume_from=state)
    for trainer in (a, b):
        for _ in range(3):
            trainer.train_step(x, y, 3e-3)
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(pa, pb), name


def test_a_checkpoint_of_the_other_optimizer_is_refused(tmp_path):
    tokens = _tokens(tmp_path / "tokens")
    adamw = Trainer(load_preset("quick", **TINY), tokens, progress=False).state_dict()
    with pytest.raises(TrainingError, match="optimizer: .adamw. in the checkpoint, .muon. now"):
        Trainer(load_preset("quick", **MUON), tokens, progress=False, resume_from=adamw)
