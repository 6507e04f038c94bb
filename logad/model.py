"""NextTokenTransformer: a small causal decoder over template ids that predicts the next template.

nanoGPT-shaped: token + learned position embeddings, pre-LN blocks of causal self-attention and an
MLP, a final LayerNorm and an output head tied to the token embedding. Shapes in comments:
B = batch, T = time (window positions), C = n_embd, V = vocab size, H = heads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from logad.errors import ConfigError

IGNORE = -100  # target value that the loss skips (padding, context-only positions)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # V: template vocab size including PAD/UNK/BOS
    block_size: int = 64  # longest input the model sees (= window length L)
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 64  # C: width
    dropout: float = 0.1  # dropout on embeddings, attention and MLP outputs (training only)
    pad_id: int = 0  # PAD token id; its embedding row is kept at zero

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, C/H)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class NextTokenTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd, padding_idx=cfg.pad_id)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying: one (V, C) matrix to resize
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))
        with torch.no_grad():
            self.tok_emb.weight[cfg.pad_id].zero_()

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx: (B, T) template ids; targets: (B, T) next ids or IGNORE. Returns (logits, loss|None)."""
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.cfg.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=IGNORE
            )
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def resize_vocab(
    model: NextTokenTransformer, old_keys: list[str], new_keys: list[str], seed: int = 0
) -> NextTokenTransformer:
    """A copy of `model` over a new vocab: rows of keys present in both vocabs are copied bit for bit;
    new rows are drawn from a normal with the mean and std of the pretrained rows (per dimension), so
    they look like template embeddings the blocks have learned to read, without being identical.
    """
    cfg = ModelConfig(**{**model.cfg.to_dict(), "vocab_size": len(new_keys)})
    new = NextTokenTransformer(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("tok_emb", "head"))}
    new.load_state_dict(state, strict=False)
    old_w = model.tok_emb.weight.detach()  # (V_old, C)
    old_index = {k: i for i, k in enumerate(old_keys)}
    real = [i for i, k in enumerate(old_keys) if i != model.cfg.pad_id]
    mean, std = old_w[real].mean(0), old_w[real].std(0)  # (C,), (C,)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = mean + std * torch.randn(len(new_keys), cfg.n_embd, generator=gen)  # (V_new, C)
        for i, key in enumerate(new_keys):
            if key in old_index:
                w[i] = old_w[old_index[key]]
        w[cfg.pad_id] = 0.0
        new.tok_emb.weight.copy_(w)
    return new


PAD_BUDGET = 32  # padded positions a forward pass may add before a new pass pays (one pass ~ 30 tokens of work on CPU)


def distinct_prefix_logits(model: NextTokenTransformer, inputs: list[list[int]], pad: int,
                           device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """Logits of every input, each distinct prefix computed once: (N, T, V) logits of N leaves and,
    per input, the leaf whose first len(input) positions are its logits (T = the longest input).

    The model is causal: position t sees positions <= t only, so an input that is a prefix of
    another (a repeated window, a cut trace and its whole trace) is read off the longer one's rows.
    Leaves run shortest first in passes of similar length (padding is wasted work)."""
    distinct = sorted(set(map(tuple, inputs)))  # lexicographic: an input's extensions follow it directly
    leaf_of: dict[tuple[int, ...], int] = {}
    leaves: list[tuple[int, ...]] = []
    for k in range(len(distinct) - 1, -1, -1):
        x = distinct[k]
        nxt = distinct[k + 1] if k + 1 < len(distinct) else None
        if nxt is not None and nxt[: len(x)] == x:
            leaf_of[x] = leaf_of[nxt]
        else:
            leaf_of[x] = len(leaves)
            leaves.append(x)
    T = max(len(x) for x in leaves)
    order = sorted(range(len(leaves)), key=lambda i: len(leaves[i]))
    passes: list[list[int]] = [[]]
    tokens = 0
    for i in order:  # ascending length: a pass pads to its last leaf
        n = len(leaves[i])
        if passes[-1] and n * (len(passes[-1]) + 1) - tokens - n > max(PAD_BUDGET, (tokens + n) // 8):
            passes.append([])
            tokens = 0
        passes[-1].append(i)
        tokens += n
    out = torch.zeros(len(leaves), T, model.cfg.vocab_size, device=device)  # (N, T, V)
    for rows in passes:
        t = len(leaves[rows[-1]])
        x = torch.tensor([list(leaves[i]) + [pad] * (t - len(leaves[i])) for i in rows], dtype=torch.long,
                         device=device)  # (n, t)
        with autocast(device):
            logits, _ = model(x)  # (n, t, V)
        out[rows, :t] = logits.float()
    return out, [leaf_of[tuple(x)] for x in inputs]


def pick_device(requested: str = "auto") -> torch.device:
    """auto -> CUDA when present, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but no CUDA device is available (use auto or cpu)")
    if requested not in {"cpu"} and not requested.startswith("cuda"):
        raise ConfigError(f"unknown device {requested!r} (auto | cpu | cuda[:N])")
    return torch.device(requested)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op context on CPU (fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
