"""Stage 16, past the tutorial: a character-level language model, a 2-layer LSTM trained on the
project's own text (the README and docs/, see parity/data.py: no download) to predict each next
character, with Adam and the gradient norm clipped.

New in tinynn's backward: backpropagation through time. ``self.lstm.backward(grad)`` walks the 64
steps of each window backwards, layer by layer from the top, the gradient of every hidden state
being its output's plus what the next step sent back (tinynn/nn/rnn.py, with the gate derivatives
in tinynn/nn/rnn_cells.py); between the two layers, dropout's mask, read from torch's own draw as
in stage 14. ``self.embed.backward(grad)`` then adds each position's gradient into the row of its
character (a character seen twice gets both). The loss is over every position of every window: the
logits (N, T, V) are flattened to (N * T, V), and so is their gradient on the way back.

Every step's loss, gradients, weights and Adam's state are compared, in lockstep in float64.
Measured (2026-12-07) with two torch runs, one with every initial weight one ulp up, over five
epochs (220 steps): at lr 5e-3 they stay 2.8e-13 apart (rel, weights), so the training is not
chaotic and lockstep proves it at any length; at lr 1e-2 the same nudge grew tenfold every ~50
steps (3.4e-11 after 88 steps, 2.6e-9 after 220), as did tinynn against torch, so 1e-2 would only
hold for a fixed number of steps.
"""

# The tutorial's code as written: its loop names, which it does not use.
# ruff: noqa: B007

from __future__ import annotations

from parity.events import Epoch, Start, Step

NAME = "char-lstm"
TITLE = "Character LSTM language model"
KIND = "sequence"
DATASET = "docs"
CHAOTIC_ON = ()  # measured on this stage: see the module docstring
BATCH_SIZE = 32
EMBED, HIDDEN, LAYERS, P_DROP = 32, 128, 2, 0.1
LR, MAX_NORM = 5e-3, 1.0


def torch_model(vocab_size):
    from torch import nn

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, EMBED)
            self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, dropout=P_DROP, batch_first=True)
            self.head = nn.Linear(HIDDEN, vocab_size)

        def forward(self, xb):
            out, _ = self.lstm(self.embed(xb))
            return self.head(out)

    return CharLSTM()


def torch_validate(model, loss_func, x_valid, y_valid):
    """Next-character loss and accuracy over every position of the validation windows."""
    import torch

    with torch.no_grad():
        out = model(x_valid)
        loss = loss_func(out.reshape(-1, out.shape[-1]), y_valid.reshape(-1))
        accuracy = (torch.argmax(out, dim=-1) == y_valid).float().mean()
    return Epoch(loss, accuracy)


def torch_train(ctx, model, opt):
    """The training loop both text stages share: Adam, the gradient norm clipped to MAX_NORM."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    train_dl = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH_SIZE, shuffle=True,
                          generator=ctx.shuffle_generator())
    loss_func = F.cross_entropy
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        model.train()
        for xb, yb in train_dl:
            out = model(xb)
            loss = loss_func(out.reshape(-1, out.shape[-1]), yb.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=MAX_NORM)
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares the two frameworks here
            opt.zero_grad()

        model.eval()
        yield torch_validate(model, loss_func, x_valid, y_valid)


def torch_version(ctx):
    from torch import optim

    model = torch_model(len(ctx.vocab))
    yield from torch_train(ctx, model, optim.Adam(model.parameters(), lr=LR))


def tinynn_model(vocab_size):
    from tinynn import nn

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, EMBED)
            self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, dropout=P_DROP, batch_first=True)
            self.head = nn.Linear(HIDDEN, vocab_size)

        def forward(self, xb):
            out, _ = self.lstm(self.embed(xb))
            return self.head(out)

        def backward(self, grad_output, needs_input_grad=False):
            grad = self.head.backward(grad_output)
            grad = self.lstm.backward(grad)  # the gradient of `out` alone: none reaches (h_n, c_n)
            self.embed.backward(grad)  # character ids have no gradient

    return CharLSTM()


def tinynn_validate(model, loss_func, x_valid, y_valid):
    """Next-character loss and accuracy over every position of the validation windows."""
    import numpy as np

    import tinynn

    with tinynn.no_grad():
        out = model(x_valid)
        loss = loss_func(out.reshape(-1, out.shape[-1]), y_valid.reshape(-1))
        accuracy = (np.argmax(out, axis=-1) == y_valid).astype(np.float32).mean()
    return Epoch(loss, accuracy)


def tinynn_train(ctx, model, opt):
    """The training loop both text stages share: Adam, the gradient norm clipped to MAX_NORM."""
    from tinynn import nn
    from tinynn.utils.data import DataLoader, TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    train_dl = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH_SIZE,
                          sampler=ctx.shuffle_sampler(len(x_train)))  # parity: torch's order
    loss_func = nn.CrossEntropyLoss()
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        model.train()
        for xb, yb in train_dl:
            out = model(xb)
            loss = loss_func(out.reshape(-1, out.shape[-1]), yb.reshape(-1))
            model.backward(loss_func.backward().reshape(out.shape))  # torch: loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=MAX_NORM)
            opt.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares the two frameworks here
            opt.zero_grad()

        model.eval()
        yield tinynn_validate(model, loss_func, x_valid, y_valid)


def tinynn_version(ctx):
    from tinynn import optim

    model = tinynn_model(len(ctx.vocab))
    yield from tinynn_train(ctx, model, optim.Adam(model.parameters(), lr=LR))
