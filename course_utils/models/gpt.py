"""A GPT from scratch, small enough to read top to bottom (the GPT-2 architecture, in plain PyTorch).

    tokens -> token embedding + position embedding -> N x Block -> final LayerNorm -> LM head -> logits
    Block:  x = x + attention(LayerNorm(x));  x = x + MLP(LayerNorm(x))      (pre-norm residual blocks)

:class:`GPTConfig` holds every size; :class:`GPT` returns logits of shape ``(batch, time, vocab)``.
Attention runs through ``F.scaled_dot_product_attention`` (fused kernels, FlashAttention on recent GPUs) or,
with ``attention="explicit"``, through the textbook ``softmax(Q K^T / sqrt(d)) V`` with a causal mask: same
numbers, more memory. ``GPT(cfg, attention=fn)`` attends with ``fn(q, k, v)`` instead (notebook 03 trains with
the student's own causal attention). :func:`to_hf_gpt2` / :func:`save_hf` export the weights to Hugging Face's
GPT-2 format so ``AutoModelForCausalLM`` loads them; :func:`from_hf_gpt2` goes the other way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Attention = Literal["sdpa", "explicit"]
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # causal (q, k, v) -> y, per head


@dataclass
class GPTConfig:
    """Every size of the model. The defaults are the workbook's tiny GPT (about 0.9M parameters)."""

    vocab_size: int = 832
    context_length: int = 256
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    dropout: float = 0.0
    tie_embeddings: bool = True      # the LM head reuses the token-embedding matrix (GPT-2 does)
    attention: Attention = "sdpa"    # "sdpa": F.scaled_dot_product_attention; "explicit": softmax(QK^T/sqrt(d))V
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): each head gets "
                             "n_embd / n_head dimensions.")
        if self.attention not in ("sdpa", "explicit"):
            raise ValueError(f"attention must be 'sdpa' or 'explicit', got {self.attention!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def padded_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (GPT-2's 50,257 becomes 50,304)."""
    return -(-vocab_size // multiple) * multiple


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and the positions before it."""

    def __init__(self, cfg: GPTConfig, attention: AttentionFn | None = None):
        super().__init__()
        self.cfg = cfg
        self.attention = attention  # None: cfg.attention's path; a function: it, on (batch, heads, time, head_dim)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)   # queries, keys and values in one matrix multiply
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)       # mixes the heads back together
        self.resid_dropout = nn.Dropout(cfg.dropout)
        mask = torch.tril(torch.ones(cfg.context_length, cfg.context_length, dtype=torch.bool))
        self.register_buffer("causal_mask", mask, persistent=False)  # only the explicit path uses it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, channels = x.shape
        q, k, v = self.c_attn(x).split(channels, dim=2)
        # (batch, time, channels) -> (batch, heads, time, head_dim): every head attends on its own.
        q, k, v = (t.view(batch, time, self.cfg.n_head, self.cfg.head_dim).transpose(1, 2) for t in (q, k, v))
        dropout = self.cfg.dropout if self.training else 0.0
        if self.attention is not None:  # a function given to the model (it applies no attention dropout)
            y = self.attention(q, k, v)
        elif self.cfg.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = explicit_attention(q, k, v, self.causal_mask[:time, :time], dropout)
        y = y.transpose(1, 2).contiguous().view(batch, time, channels)
        return self.resid_dropout(self.c_proj(y))


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                       dropout: float = 0.0) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d) + causal mask) V``, holding the whole (time x time) score matrix in memory."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~mask, float("-inf"))     # a position may not look at the future
    weights = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return weights @ v


class MLP(nn.Module):
    """Position-wise feed-forward network: widen four times, GELU, project back."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.gelu = nn.GELU(approximate="tanh")   # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block: attention then MLP, each on a normalised copy added back to the residual stream."""

    def __init__(self, cfg: GPTConfig, attention: AttentionFn | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg, attention)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The whole model: ``GPT(cfg)(token_ids)`` returns next-token logits, shape ``(batch, time, vocab_size)``.

    ``attention``, if given, is the causal attention every block uses, ``attention(q, k, v)`` on tensors of shape
    ``(batch, heads, time, head_dim)``, in place of ``cfg.attention``'s path; the weights are the same either way.
    """

    def __init__(self, cfg: GPTConfig, attention: AttentionFn | None = None):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)        # token embedding
        self.wpe = nn.Embedding(cfg.context_length, cfg.n_embd)    # learned position embedding
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg, attention) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight     # one matrix, used to read tokens in and to score them out
        self.apply(self._init_weights)
        # GPT-2's trick: shrink the projections that write into the residual stream, one per sublayer.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        time = idx.size(1)
        if time > self.cfg.context_length:
            raise ValueError(f"Sequence of {time} tokens is longer than the context length "
                             f"{self.cfg.context_length}: crop it (sampling keeps the last context_length tokens).")
        positions = torch.arange(time, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def num_parameters(self, *, count_positions: bool = True) -> int:
        """Number of distinct parameters (a tied matrix counts once); optionally without position embeddings."""
        total = sum(p.numel() for p in self.parameters())   # parameters() yields a shared tensor once
        return total if count_positions else total - self.wpe.weight.numel()


# ------------------------------------------------------------------------------------- Hugging Face GPT-2 format
# Hugging Face's GPT-2 stores its projections as Conv1D, whose weight is (in, out): the transpose of nn.Linear's.
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_gpt2_config(cfg: GPTConfig, **special_tokens: Any):
    """The ``transformers.GPT2Config`` that describes the same network as ``cfg``."""
    from transformers import GPT2Config

    for name in ("bos_token_id", "eos_token_id"):   # GPT2Config's defaults (50256) only fit GPT-2's own vocabulary
        special_tokens.setdefault(name, None)
    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=4 * cfg.n_embd, activation_function="gelu_new",
                      resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                      layer_norm_epsilon=cfg.layer_norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                      **special_tokens)


def _hf_name(name: str) -> str:
    return name if name == "lm_head.weight" else "transformer." + name


def to_hf_gpt2(model: GPT, **special_tokens: Any):
    """A ``GPT2LMHeadModel`` holding a copy of ``model``'s weights (same logits, up to float rounding)."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel(hf_gpt2_config(model.cfg, **special_tokens))
    ours = model.state_dict()
    if model.cfg.tie_embeddings:
        ours.pop("lm_head.weight")       # the same tensor as wte.weight; HF ties it again
    mapped = {_hf_name(k): (v.t() if k.endswith(_TRANSPOSED) else v).detach().clone() for k, v in ours.items()}
    missing, unexpected = hf.load_state_dict(mapped, strict=False)
    missing = [m for m in missing if not (model.cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"Weight mapping to GPT-2 is incomplete: missing {missing}, unexpected {unexpected}")
    return hf.to(next(model.parameters()).device).eval()


def from_hf_gpt2(hf_model, attention: Attention = "sdpa") -> GPT:
    """Our :class:`GPT` with the weights of a transformers ``GPT2LMHeadModel`` (e.g. ``tiny-gpt2``)."""
    c = hf_model.config
    cfg = GPTConfig(vocab_size=c.vocab_size, context_length=c.n_positions, n_embd=c.n_embd, n_layer=c.n_layer,
                    n_head=c.n_head, dropout=0.0, tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),
                    attention=attention, layer_norm_eps=c.layer_norm_epsilon)
    model = GPT(cfg)
    theirs = hf_model.state_dict()
    state = {}
    for name in model.state_dict():
        source = "wte.weight" if name == "lm_head.weight" and cfg.tie_embeddings else name
        value = theirs[_hf_name(source)]
        state[name] = value.t() if name.endswith(_TRANSPOSED) else value
    model.load_state_dict(state)   # strict: every weight of ours found its counterpart
    return model.eval()


def save_hf(model: GPT, folder: str | Path, tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (and the tokenizer) so ``AutoModelForCausalLM`` loads them."""
    folder = Path(folder)
    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    to_hf_gpt2(model, **special).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def config_dict(cfg: GPTConfig) -> dict[str, Any]:
    """``cfg`` as a plain dict (for tables and JSON)."""
    return asdict(cfg)
