"""tinynn's speed engine: the same maths as the textbook ops in ``tinynn/nn/``, arranged to run fast.

Private. Nothing here is needed to understand an op; README.md beside this file explains each
trick and what it gained. Each op reaches it through one marked dispatch in its own file, and
``tinynn.textbook()`` keeps it from running (or even being imported).
"""
