"""``KerasMultiHeadAttention``: keras.layers.MultiHeadAttention around F.scaled_dot_product_attention."""

import torch
import torch.nn.functional as F
from torch import nn


class KerasMultiHeadAttention(nn.Module):
    """keras.layers.MultiHeadAttention: per-head projections, scaled dot-product attention, output projection.

    Four nn.Linear named like Keras' (query, key, value, attention_output); unlike nn.MultiheadAttention,
    num_heads * key_dim need not equal the model width.
    """

    def __init__(self, query_dim: int, key_dim_in: int, value_dim_in: int, num_heads: int, key_dim: int,
                 value_dim: int, output_dim: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = nn.Dropout(dropout)  # an nn.Dropout, so parity --train switches it off like any dropout
        # a query allowed no key: Keras with dropout > 0 (its masked-softmax path) gives it zero weights,
        # without dropout (ops.dot_product_attention) equal weights; fixed here, whatever dropout.p becomes
        self.blind_rows_zero = dropout > 0.0
        self.query = nn.Linear(query_dim, num_heads * key_dim, bias=bias)
        self.key = nn.Linear(key_dim_in, num_heads * key_dim, bias=bias)
        self.value = nn.Linear(value_dim_in, num_heads * value_dim, bias=bias)
        self.attention_output = nn.Linear(num_heads * value_dim, output_dim, bias=bias)

    def forward(self, query: torch.Tensor, value: torch.Tensor, key: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        key = value if key is None else key
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                   for proj, x in ((self.query, query), (self.key, key), (self.value, value)))
        if mask is not None:  # Keras: (N, T, S), True = attend; combined with the causal mask like Keras
            mask = mask.bool().unsqueeze(1)
            if causal:
                mask = mask & torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
                causal = False
            # a query allowed no key (padding only): scaled_dot_product_attention would give NaN (and NaN
            # gradients); it attends to every key there, and the row becomes what Keras computes
            blind = ~mask.any(dim=-1, keepdim=True)
            mask = mask | blind
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0,
                                             is_causal=causal)
        if mask is not None:
            out = torch.where(blind, 0.0 if self.blind_rows_zero else v.mean(dim=-2, keepdim=True), out)
        return self.attention_output(out.transpose(1, 2).flatten(2))
