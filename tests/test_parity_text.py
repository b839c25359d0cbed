"""The text stages' data (the project's own docs as next-character windows) and their sampler."""

from __future__ import annotations

import numpy as np
import pytest

import parity.data
from parity.data import docs_text, load_data, text_data
from parity.sample import main, sample
from parity.stages.s16_char_lstm import tinynn_model

TEXT = "the cat sat on the mat; the dog sat on the log. " * 8


def test_text_windows_target_the_next_character_and_split_train_from_valid():
    data = text_data(TEXT, seq_len=8, stride=3, valid_fraction=0.25)
    assert data.vocab == "".join(sorted(set(TEXT))) and data.source == "docs"
    ids = np.array([data.vocab.index(c) for c in TEXT])
    split = int(len(TEXT) * 0.75)
    assert data.x_train.shape == ((split - 9) // 3 + 1, 8) and data.x_train.dtype == np.int64
    for i in (0, 1, len(data.x_train) - 1):  # train windows start every 3 characters, targets one on
        assert (data.x_train[i] == ids[3 * i:3 * i + 8]).all() and (data.y_train[i] == ids[3 * i + 1:3 * i + 9]).all()
    assert data.x_valid.shape == ((len(TEXT) - split - 9) // 8 + 1, 8)
    assert (data.x_valid[1] == ids[split + 8:split + 16]).all()  # side by side, from the split on
    assert (data.y_valid[:, :-1] == data.x_valid[:, 1:]).all()


def test_docs_dataset_is_the_readme_and_docs_and_needs_no_data_folder(tmp_path):
    text = docs_text()
    assert text.startswith("# tinynn") and "Reading along" in text
    assert "\b" not in text and "\f" not in text  # LaTeX written as Python escapes would show up here
    data = load_data(tmp_path / "nowhere", "docs", download=False)
    assert data.source == "docs" and data.x_train.shape[1] == 64 and len(data.vocab) == len(set(text))


def test_sample_continues_the_prompt_with_characters_of_the_vocabulary_reproducibly():
    vocab = "".join(sorted(set(TEXT)))
    model = tinynn_model(len(vocab))
    first = sample(model, vocab, "the ", 30, seed=1)
    assert first.startswith("the ") and len(first) == 34 and set(first) <= set(vocab)
    assert sample(model, vocab, "the ", 30, seed=1) == first
    assert sample(model, vocab, "the ", 30, seed=2) != first
    with pytest.raises(ValueError, match=r"prompt: characters \['Z'\]"):
        sample(model, vocab, "Zed", 5)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        sample(model, vocab, "the", 5, temperature=0)


def test_sample_cli_trains_reports_each_epoch_then_writes(monkeypatch, capsys):
    monkeypatch.setattr(parity.data, "load_data", lambda *args, **kwargs: text_data(TEXT * 4))
    assert main(["--stage", "char-transformer", "--epochs", "2", "--length", "12", "--prompt", "the"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("after ") and "val loss" in lines[0] and lines[1].startswith("after ")
    assert lines[-1].startswith("the") and len(lines[-1]) == 15
