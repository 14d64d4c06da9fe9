"""Rotary position embeddings (RoPE) with the scalings Llama-family models use.

The inverse frequencies are computed exactly as transformers computes them (float32, same operation
order), and cos/sin are kept in a table indexed by position, grown on demand. Scalings:

- default: inv_freq[i] = 1 / theta^(2i/d)
- linear: inv_freq / factor
- llama3: low frequencies divided by factor, high ones kept, the band between smoothly interpolated
- dynamic (NTK): for a token at position p >= max_position_embeddings, theta is raised as if the sequence
  were p + 1 long. transformers rescales the whole forward pass by its largest position instead; the two
  agree token for token when decoding one token at a time, and for any prompt that fits in
  max_position_embeddings. Per position keeps a token's rotation independent of how it was batched.
"""
from __future__ import annotations

import math

import torch

from models.config import ModelConfig


def _default_inv_freq(theta: float | torch.Tensor, dim: int) -> torch.Tensor:
    exponent = torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim  # (dim/2,)
    return 1.0 / (theta ** exponent)


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    factor = scaling["factor"]
    low_freq_factor, high_freq_factor = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def inverse_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """(head_dim/2,) float32 inverse frequencies for positions below max_position_embeddings."""
    inv_freq = _default_inv_freq(cfg.rope_theta, cfg.head_dim)
    if cfg.rope_type == "linear":
        inv_freq = inv_freq / (cfg.rope_scaling or {})["factor"]
    elif cfg.rope_type == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, cfg.rope_scaling or {})
    return inv_freq


def _dynamic_inv_freq(cfg: ModelConfig, seq_len: torch.Tensor) -> torch.Tensor:
    """(P, head_dim/2) inverse frequencies for sequences of lengths `seq_len` (P, 1) int64 (NTK-aware theta)."""
    factor, dim, max_pos = (cfg.rope_scaling or {})["factor"], cfg.head_dim, cfg.max_position_embeddings
    seq_len = torch.maximum(seq_len, torch.tensor(max_pos, dtype=seq_len.dtype))
    theta = cfg.rope_theta * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))  # (P, 1)
    return _default_inv_freq(theta, dim)


class RotaryEmbedding:
    """cos/sin tables (positions, head_dim) on the model's device; `apply` rotates q or k in place of a copy."""

    def __init__(self, cfg: ModelConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.inv_freq = inverse_frequencies(cfg)
        self.cos = self.sin = torch.empty(0, cfg.head_dim, device=self.device, dtype=dtype)

    def _grow(self, length: int) -> None:
        size = max(length, 2 * self.cos.shape[0], 256)
        positions = torch.arange(size, dtype=torch.int64)
        freqs = positions[:, None].float() * self.inv_freq[None, :]  # (size, head_dim/2)
        if self.cfg.rope_type == "dynamic" and size > self.cfg.max_position_embeddings:
            far = positions[self.cfg.max_position_embeddings:, None]  # (P, 1)
            freqs[self.cfg.max_position_embeddings:] = far.float() * _dynamic_inv_freq(self.cfg, far + 1)
        emb = torch.cat((freqs, freqs), dim=-1)  # (size, head_dim), halves as in rotate_half
        self.cos = emb.cos().to(self.device, self.dtype)
        self.sin = emb.sin().to(self.device, self.dtype)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (N, 1, head_dim) for positions (N,), ready to broadcast over heads."""
        needed = int(positions.max()) + 1 if positions.numel() else 0
        if needed > self.cos.shape[0]:
            self._grow(needed)
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate x (N, heads, head_dim): x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1)."""
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin
