import pytest
import torch

from logad.errors import ConfigError
from logad.model import IGNORE, ModelConfig, NextTokenTransformer, resize_vocab
from logad.scoring import collate, window_example


def test_shapes_and_padding_aware_loss():
    torch.manual_seed(0)
    m = NextTokenTransformer(ModelConfig(vocab_size=20, block_size=16, n_embd=32, n_head=4, dropout=0.0))
    x, y = collate([window_example([5, 6, 7], 0, 2), window_example([5, 6, 7, 8, 9, 10], 0, 2)], pad=0)
    assert x.shape == y.shape == (2, 6)
    assert (y[0, 3:] == IGNORE).all()  # padding targets are skipped
    logits, loss = m(x, y)
    assert logits.shape == (2, 6, 20)
    # The loss equals the mean NLL over the 9 real targets only.
    logp = torch.log_softmax(logits, -1)
    mask = y != IGNORE
    manual = -(logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask]).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    with pytest.raises(ValueError):
        m(torch.zeros(1, 17, dtype=torch.long))


def test_context_targets_ignored_in_later_windows():
    x, y = window_example([3, 4, 5, 6, 7, 8], n_context=3, bos=2)
    assert x == [3, 4, 5, 6, 7]
    assert y == [IGNORE, IGNORE, 6, 7, 8]  # events 0..2 were scored by the previous window


def test_causal():
    torch.manual_seed(0)
    m = NextTokenTransformer(ModelConfig(vocab_size=12, block_size=8, n_embd=16, n_head=2, dropout=0.0)).eval()
    a = torch.tensor([[2, 3, 4, 5, 6]])
    b = torch.tensor([[2, 3, 4, 9, 9]])
    la, _ = m(a)
    lb, _ = m(b)
    assert torch.allclose(la[0, :3], lb[0, :3], atol=1e-6)  # future tokens do not leak


def test_resize_vocab_keeps_shared_rows_bit_identical():
    torch.manual_seed(0)
    old_keys = ["<pad>", "<unk>", "<bos>", "E1", "E2", "E3"]
    new_keys = ["<pad>", "<unk>", "<bos>", "E2", "X1", "X2", "X3", "E1"]
    m = NextTokenTransformer(ModelConfig(vocab_size=6, block_size=8, n_embd=16, n_head=2))
    r = resize_vocab(m, old_keys, new_keys, seed=1)
    old, new = m.tok_emb.weight.detach(), r.tok_emb.weight.detach()
    for k in ("<unk>", "<bos>", "E1", "E2"):
        assert torch.equal(new[new_keys.index(k)], old[old_keys.index(k)])
    fresh = new[[4, 5, 6]]
    assert torch.isfinite(fresh).all()
    assert not torch.equal(fresh[0], fresh[1]) and not torch.equal(fresh[1], fresh[2])
    assert r.head.weight is r.tok_emb.weight  # still tied
    assert torch.equal(r.blocks[0].attn.qkv.weight, m.blocks[0].attn.qkv.weight)
    assert (new[0] == 0).all()  # PAD stays zero


def test_bad_config_is_config_error():
    with pytest.raises(ConfigError):
        ModelConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ConfigError):
        ModelConfig(vocab_size=0)
