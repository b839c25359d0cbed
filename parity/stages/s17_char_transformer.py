"""Stage 17, past the tutorial: stage 16's character-level language model with a 2-layer
Transformer encoder in place of the LSTM, made causal by its mask (position t attends to positions
0..t only), and the same training loop (Adam, the gradient norm clipped).

The model: each character's embedding plus its position's (a learned ``Embedding`` of 0..T-1),
two pre-norm encoder layers (self-attention with 4 heads, a GELU feed-forward network, dropout),
a final LayerNorm, and a Linear head to the vocabulary. New in tinynn's backward: attention's
(the softmax's Jacobian, row by row: tinynn/nn/attention.py), summed over query, key and value in
self-attention, and each residual path's gradient added to the block's (tinynn/nn/transformer.py).
The position embedding was broadcast over the batch, so its gradient is summed over it.

The encoder has no biases (``bias=False``, as in several GPT-style models). With biases it could
not be checked in lockstep: the key projection's bias adds the same q . b to every score of a query,
which the softmax removes, so its exact gradient is 0 and what each framework computes is rounding
noise, which Adam's m / sqrt(v) turns into steps of +-lr in different directions.

Adam's eps is 1e-6, not torch's default 1e-8, for the float32 check from shared weights. A weight
whose gradient g is near eps moves by lr g / (|g| + eps), whose slope in g peaks at lr / (4 eps):
with 1e-8 it turns float32's rounding of such a gradient into a weight difference above float32's
tolerance. Measured: at step 1, linear2's gradient (50, 136) was 6.95e-9 in torch and 7.03e-9 in
tinynn (the array's largest 7.0e-3, so 1e-8 of it apart), and the weights then differed by 2.8e-5.
With eps 1e-6 the same rounding moves a weight by at most ~2e-7.

Not chaotic (measured 2026-12-07 as for stage 16): two torch runs, one with every initial weight
one ulp up, at lr 1e-2 over five epochs (220 steps), ended 2.4e-13 apart (rel, weights; 8.6e-14
for the first 88 steps) with eps 1e-6, and 6.8e-13 with eps 1e-8: four orders inside 1e-9.
"""

from __future__ import annotations

from parity.stages.s16_char_lstm import tinynn_train, torch_train

NAME = "char-transformer"
TITLE = "Character Transformer language model"
KIND = "sequence"
DATASET = "docs"
CHAOTIC_ON = ()  # measured on this stage: see the module docstring
BATCH_SIZE = 32  # stage 16's, which tinynn_train and torch_train use
D_MODEL, HEADS, FEEDFORWARD, LAYERS, P_DROP, MAX_LEN = 64, 4, 256, 2, 0.1, 64
LR, EPS = 1e-2, 1e-6  # EPS: see the module docstring


def torch_model(vocab_size):
    import torch
    from torch import nn

    class CharTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, D_MODEL)
            self.position = nn.Embedding(MAX_LEN, D_MODEL)
            layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FEEDFORWARD, P_DROP, activation="gelu",
                                               batch_first=True, norm_first=True, bias=False)
            self.encoder = nn.TransformerEncoder(layer, LAYERS, norm=nn.LayerNorm(D_MODEL, bias=False),
                                                 enable_nested_tensor=False)
            self.head = nn.Linear(D_MODEL, vocab_size)

        def forward(self, xb):
            seq_len = xb.shape[1]
            h = self.embed(xb) + self.position(torch.arange(seq_len))
            causal = torch.triu(torch.full((seq_len, seq_len), float("-inf"), dtype=h.dtype), diagonal=1)
            return self.head(self.encoder(h, mask=causal, is_causal=True))

    return CharTransformer()


def torch_version(ctx):
    from torch import optim

    model = torch_model(len(ctx.vocab))
    yield from torch_train(ctx, model, optim.Adam(model.parameters(), lr=LR, eps=EPS))


def tinynn_model(vocab_size):
    import numpy as np

    from tinynn import nn

    class CharTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, D_MODEL)
            self.position = nn.Embedding(MAX_LEN, D_MODEL)
            layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FEEDFORWARD, P_DROP, activation="gelu",
                                               batch_first=True, norm_first=True, bias=False)
            self.encoder = nn.TransformerEncoder(layer, LAYERS, norm=nn.LayerNorm(D_MODEL, bias=False),
                                                 enable_nested_tensor=False)
            self.head = nn.Linear(D_MODEL, vocab_size)

        def forward(self, xb):
            seq_len = xb.shape[1]
            h = self.embed(xb) + self.position(np.arange(seq_len))
            causal = np.triu(np.full((seq_len, seq_len), -np.inf, dtype=h.dtype), k=1)
            return self.head(self.encoder(h, mask=causal, is_causal=True))

        def backward(self, grad_output, needs_input_grad=False):
            grad = self.encoder.backward(self.head.backward(grad_output))
            self.embed.backward(grad)  # character ids have no gradient
            self.position.backward(grad.sum(axis=0))  # one position row served the whole batch

    return CharTransformer()


def tinynn_version(ctx):
    from tinynn import optim

    model = tinynn_model(len(ctx.vocab))
    yield from tinynn_train(ctx, model, optim.Adam(model.parameters(), lr=LR, eps=EPS))
