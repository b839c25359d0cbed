"""``python -m parity.sample``: train a character-level stage in tinynn alone, then let it write.

    python -m parity.sample --stage char-lstm --epochs 2 --length 300 --prompt "The "

It runs the stage's tinynn version on its own (no torch model beside it, no comparison; the batch
order is still torch's shuffle, replayed), prints each epoch's validation loss and accuracy, and
then samples: the model reads the last ``seq_len`` characters and the next one is drawn from
softmax(logits / temperature), one character at a time.
"""

from __future__ import annotations

import argparse
import sys

CHARACTER_STAGES = ("char-lstm", "char-transformer")


def sample(model, vocab: str, prompt: str, length: int, temperature: float = 0.8, seq_len: int = 64,
           seed: int = 0) -> str:
    """``prompt`` and ``length`` characters more, each drawn from the model's next-character softmax."""
    import numpy as np

    import tinynn

    unknown = sorted(set(prompt) - set(vocab))
    if unknown:
        raise ValueError(f"prompt: characters {unknown} are not in the vocabulary of {len(vocab)} characters")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)
    ids = [vocab.index(char) for char in prompt]
    model.eval()
    with tinynn.no_grad():
        for _ in range(length):
            window = np.array([ids[-seq_len:]], dtype=np.int64)
            logits = np.asarray(model(window)[0, -1], dtype=np.float64) / temperature
            p = np.exp(logits - logits.max())
            ids.append(int(rng.choice(len(vocab), p=p / p.sum())))
    return "".join(vocab[i] for i in ids)


def main(argv: list[str] | None = None) -> int:
    from parity.__main__ import single_threaded_by_default

    single_threaded_by_default()  # as python -m parity: see its docstring
    parser = argparse.ArgumentParser(prog="python -m parity.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=CHARACTER_STAGES, default="char-lstm")
    parser.add_argument("--epochs", type=int, default=2, metavar="N", help="training epochs (default 2, as parity)")
    parser.add_argument("--length", type=int, default=300, metavar="N", help="characters to write (default 300)")
    parser.add_argument("--prompt", default="The ", help='what it continues (default "The ")')
    parser.add_argument("--temperature", type=float, default=0.8, help="below 1: likelier characters (default 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, the shuffle and the sampling")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.length < 0:
        parser.error("--epochs must be at least 1 and --length at least 0")

    import tinynn
    from parity.context import StageContext
    from parity.data import SEQ_LEN, load_data
    from parity.events import Epoch, Start
    from parity.stages import find_stage

    data = load_data(None, "docs")
    tinynn.manual_seed(args.seed)
    events = find_stage(args.stage).tinynn_version(StageContext(data, args.epochs, args.seed))
    start = next(events)
    assert isinstance(start, Start)
    steps = 0
    for event in events:
        if isinstance(event, Epoch):
            print(f"after {steps} steps: val loss {event.val_loss:.4f}, "
                  f"next-character accuracy {event.val_accuracy:.4f}", flush=True)
        else:
            steps += 1
    print()
    print(sample(start.model, data.vocab, args.prompt, args.length, args.temperature, SEQ_LEN, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
