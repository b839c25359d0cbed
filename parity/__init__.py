"""parity: every stage of PyTorch's "What is torch.nn really?" run in torch and in tinynn, step by step.

``parity/stages/`` holds the tutorial's code, one file per stage, each written twice (torch and
tinynn) side by side; ``parity.runner`` drives both in lockstep and compares every step;
``python -m parity`` runs them all and reports (see ``parity/__main__.py``).
"""
