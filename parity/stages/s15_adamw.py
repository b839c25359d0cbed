"""Stage 15, after the tutorial: stage 14's BatchNorm and Dropout CNN on Fashion-MNIST, trained as a
learner's next model is: AdamW on a one-cycle schedule, with the gradient norm clipped.

The model and its backward are stage 14's; what is new is the training step. After the backward,
``clip_grad_norm_`` scales every gradient by min(1, max_norm / ||g||) (the norm over all of them
at once), ``AdamW.step`` decays the weights and moves them by the bias-corrected moments, and
``OneCycleLR.step`` sets the next learning rate and beta1 (tinynn/optim/adam.py and
tinynn/optim/lr_scheduler/ have each formula). The runner compares every step's loss, clipped
gradients, weights, Adam's moments and step count, and the running statistics.

Float64 training here is not chaotic, unlike the tutorial's lr 0.5 on Fashion-MNIST (see
parity/runner.py): in lockstep over the full two epochs (1,564 steps, 2026-12-07) the two
frameworks stayed within 2.8e-14 in loss and 1.1e-12 in gradients, so it runs in lockstep like the
MNIST stages (CHAOTIC_ON is empty). In float32, torch against itself (initial weights one ulp
apart) ended 0.34 points apart in validation accuracy.
"""

# The tutorial's code as written: its loop names, which it does not use.
# ruff: noqa: B007

from __future__ import annotations

from parity.events import Start, Step

NAME = "adamw"
TITLE = "AdamW, OneCycleLR and clipping"
KIND = "cnn"
DATASET = "fashion-mnist"
CHAOTIC_ON = ()  # measured on this stage: see the module docstring
MAX_LR, WEIGHT_DECAY, MAX_NORM = 0.01, 0.01, 1.0


def torch_version(ctx):
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torch.utils.data import DataLoader, TensorDataset

    from parity.stages.s14_batchnorm import torch_model
    from parity.stages.torch_tutorial import bs, validate

    x_train, y_train, x_valid, y_valid = map(torch.tensor, ctx.data())
    train_ds = TensorDataset(x_train, y_train)
    loss_func = F.cross_entropy
    train_dl = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=ctx.shuffle_generator())

    model = torch_model()
    opt = optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=WEIGHT_DECAY)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=MAX_LR, epochs=ctx.epochs, steps_per_epoch=len(train_dl))
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        model.train()
        for xb, yb in train_dl:
            loss = loss_func(model(xb), yb)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=MAX_NORM)
            opt.step()
            sched.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares the two frameworks here
            opt.zero_grad()

        model.eval()
        yield validate(model, loss_func, x_valid, y_valid)


def tinynn_version(ctx):
    from parity.stages.s14_batchnorm import tinynn_model
    from parity.stages.tinynn_tutorial import bs, validate
    from tinynn import nn, optim
    from tinynn.utils.data import DataLoader, TensorDataset

    x_train, y_train, x_valid, y_valid = ctx.data()
    train_ds = TensorDataset(x_train, y_train)
    loss_func = nn.CrossEntropyLoss()
    train_dl = DataLoader(train_ds, batch_size=bs, sampler=ctx.shuffle_sampler(len(train_ds)))  # parity: torch's order

    model = tinynn_model()
    opt = optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=WEIGHT_DECAY)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=MAX_LR, epochs=ctx.epochs, steps_per_epoch=len(train_dl))
    yield Start.of(model, opt)

    for epoch in range(ctx.epochs):
        model.train()
        for xb, yb in train_dl:
            loss = loss_func(model(xb), yb)
            model.backward(loss_func.backward(), needs_input_grad=False)  # torch: loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=MAX_NORM)
            opt.step()
            sched.step()
            yield Step.of(loss, model, opt)  # parity: the runner compares the two frameworks here
            opt.zero_grad()

        model.eval()
        yield validate(model, loss_func, x_valid, y_valid)
