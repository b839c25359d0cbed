"""tinynn.utils.data: datasets, samplers, DataLoader and default_collate, checked against torch."""

from __future__ import annotations

import collections
import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.utils.data as torch_data

import tinynn
from tests.helpers import outcome
from tinynn.utils.data import (
    BatchSampler,
    ChainDataset,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
)


def assert_same_as_torch(ours: object, theirs: object, where: str = "batch") -> None:
    """Same container types, same keys/lengths, arrays equal to torch's tensors with the same dtype."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray), f"{where}: {type(ours).__name__} where torch has a tensor"
        expected = theirs.numpy()
        assert ours.dtype == expected.dtype, f"{where}: dtype {ours.dtype} != torch's {expected.dtype}"
        np.testing.assert_array_equal(ours, expected, err_msg=where)
    elif isinstance(theirs, collections.abc.Mapping):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        for key in theirs:
            assert_same_as_torch(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), f"{where}: {ours!r} vs {theirs!r}"
        for position, (mine, its) in enumerate(zip(ours, theirs)):
            assert_same_as_torch(mine, its, f"{where}[{position}]")
    else:
        assert ours == theirs, where


def datasets(n: int, seed: int = 0) -> tuple[TensorDataset, torch_data.TensorDataset]:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 2, 3)).astype(np.float32)
    labels = rng.integers(0, 10, size=n)
    return TensorDataset(images, labels), torch_data.TensorDataset(torch.tensor(images), torch.tensor(labels))


class SquaresDataset(Dataset):
    """A plain map-style dataset (not a TensorDataset) with nested samples."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __getitem__(self, index: int) -> dict:
        return {"x": np.full(2, index, dtype=np.float32), "pair": (index, float(index) ** 2), "name": f"s{index}"}

    def __len__(self) -> int:
        return self.n


# ------------------------------------------------------------------ TensorDataset
def test_tensor_dataset_indexes_every_array_by_int_slice_and_index_array() -> None:
    images, labels = np.arange(24.0).reshape(6, 4), np.arange(6) * 10
    dataset = TensorDataset(images, labels)
    assert len(dataset) == 6
    image, label = dataset[2]
    np.testing.assert_array_equal(image, images[2])
    assert label == 20
    first_two = dataset[:2]
    np.testing.assert_array_equal(first_two[0], images[:2])
    picked = dataset[np.array([5, 0, 5])]
    np.testing.assert_array_equal(picked[0], images[[5, 0, 5]])
    np.testing.assert_array_equal(picked[1], [50, 0, 50])
    from_torch = TensorDataset(torch.arange(3.0), [1, 2, 3])
    assert isinstance(from_torch.tensors[0], np.ndarray) and from_torch.tensors[0].dtype == np.float32


def test_tensor_dataset_errors_name_every_length() -> None:
    with pytest.raises(ValueError, match="Size mismatch between tensors: lengths 50000 and 49999"):
        TensorDataset(np.zeros((50000, 1)), np.zeros(49999))
    with pytest.raises(ValueError, match="lengths 5, 5 and 4"):
        TensorDataset(np.zeros(5), np.zeros(5), np.zeros(4))
    with pytest.raises(ValueError, match="at least one array"):
        TensorDataset()
    with pytest.raises(ValueError, match="array 1 is 0-dimensional"):
        TensorDataset(np.zeros(3), np.float32(1.0))
    with pytest.raises(NotImplementedError, match="should implement __getitem__"):
        Dataset()[0]


# ------------------------------------------------------------------ DataLoader vs torch
@pytest.mark.parametrize(("n", "batch_size", "drop_last"),
                         list(itertools.product([1, 7, 64, 65, 100], [1, 3, 64, 128], [False, True])))
def test_len_batch_shapes_and_sequential_order_match_torch(n: int, batch_size: int, drop_last: bool) -> None:
    ours, theirs = datasets(n)
    loader = DataLoader(ours, batch_size=batch_size, drop_last=drop_last)
    torch_loader = torch_data.DataLoader(theirs, batch_size=batch_size, drop_last=drop_last)
    assert len(loader) == len(torch_loader)
    batches, torch_batches = list(loader), list(torch_loader)
    assert len(batches) == len(torch_batches) == len(loader)
    for position, (batch, torch_batch) in enumerate(zip(batches, torch_batches)):
        assert_same_as_torch(batch, torch_batch, f"batch {position}")


def test_given_sampler_order_is_reproduced_exactly() -> None:
    ours, theirs = datasets(50)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    torch_batches = list(torch_data.DataLoader(theirs, batch_size=8, sampler=order.tolist()))
    for sampler in (order.tolist(), order.numpy(), order):
        batches = list(DataLoader(ours, batch_size=8, sampler=sampler))
        for batch, torch_batch in zip(batches, torch_batches, strict=True):
            assert_same_as_torch(batch, torch_batch)
    # a generic iterable (not a list or array) goes through plain iteration
    batches = list(DataLoader(ours, batch_size=8, sampler=iter(order.tolist())))
    for batch, torch_batch in zip(batches, torch_batches, strict=True):
        assert_same_as_torch(batch, torch_batch)


def test_batch_sampler_and_unbatched_loading_match_torch() -> None:
    ours, theirs = datasets(10)
    batches = [[3, 1], [0, 9, 4], [7]]
    for batch, torch_batch in zip(DataLoader(ours, batch_sampler=batches),
                                  torch_data.DataLoader(theirs, batch_sampler=batches), strict=True):
        assert_same_as_torch(batch, torch_batch)
    loader, torch_loader = DataLoader(ours, batch_size=None), torch_data.DataLoader(theirs, batch_size=None)
    assert len(loader) == len(torch_loader) == 10
    samples, torch_samples = list(loader), list(torch_loader)
    assert len(samples) == 10
    for sample, torch_sample in zip(samples, torch_samples):
        assert isinstance(sample, list) and len(sample) == 2  # torch's default_convert: tuple -> list
        np.testing.assert_array_equal(sample[0], torch_sample[0].numpy())
        assert sample[1] == torch_sample[1].item()


def test_generic_dataset_with_nested_samples_matches_torch() -> None:
    loader = DataLoader(SquaresDataset(7), batch_size=3, sampler=[6, 0, 2, 5, 1, 3, 4])
    torch_loader = torch_data.DataLoader(SquaresDataset(7), batch_size=3, sampler=[6, 0, 2, 5, 1, 3, 4])
    for batch, torch_batch in zip(loader, torch_loader, strict=True):
        assert_same_as_torch(batch, torch_batch)


def test_fast_path_gives_what_collating_samples_gives() -> None:
    ours, _ = datasets(37, seed=3)
    order = np.random.default_rng(4).permutation(37)
    fast = list(DataLoader(ours, batch_size=5, sampler=order))
    slow = list(DataLoader(ours, batch_size=5, sampler=order, collate_fn=lambda batch: default_collate(batch)))
    assert len(fast) == len(slow) == 8
    for fast_batch, slow_batch in zip(fast, slow):
        assert isinstance(fast_batch, list)
        for fast_array, slow_array in zip(fast_batch, slow_batch, strict=True):
            assert fast_array.dtype == slow_array.dtype
            np.testing.assert_array_equal(fast_array, slow_array)


def test_tensor_dataset_subclass_getitem_is_used() -> None:
    class Doubled(TensorDataset):
        def __getitem__(self, index: int) -> tuple:
            return tuple(array[index] * 2 for array in self.tensors)

    (batch,) = next(iter(DataLoader(Doubled(np.arange(4.0)), batch_size=4)))
    np.testing.assert_array_equal(batch, [0.0, 2.0, 4.0, 6.0])


# ------------------------------------------------------------------ shuffling
def epoch_orders(loader: DataLoader, epochs: int) -> list[np.ndarray]:
    return [np.concatenate([labels for _, labels in loader]) for _ in range(epochs)]


def test_shuffle_draws_a_new_permutation_each_epoch_reproducible_from_seed() -> None:
    n = 100
    dataset = TensorDataset(np.zeros((n, 1), dtype=np.float32), np.arange(n))
    tinynn.manual_seed(123)
    first = epoch_orders(DataLoader(dataset, batch_size=16, shuffle=True), 3)
    tinynn.manual_seed(123)
    again = epoch_orders(DataLoader(dataset, batch_size=16, shuffle=True), 3)
    for order, repeat in zip(first, again):
        np.testing.assert_array_equal(np.sort(order), np.arange(n))  # a permutation
        np.testing.assert_array_equal(order, repeat)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[0], np.arange(n))
    seeded = epoch_orders(DataLoader(dataset, batch_size=16, shuffle=True, generator=7), 2)
    same_seed = epoch_orders(DataLoader(dataset, batch_size=16, shuffle=True,
                                        generator=np.random.default_rng(7)), 2)
    for order, repeat in zip(seeded, same_seed):
        np.testing.assert_array_equal(order, repeat)
    assert not np.array_equal(seeded[0], seeded[1])


def test_shuffled_loader_len_and_batch_sizes_match_torch() -> None:
    ours, theirs = datasets(70)
    loader = DataLoader(ours, batch_size=32, shuffle=True, drop_last=False)
    torch_loader = torch_data.DataLoader(theirs, batch_size=32, shuffle=True, drop_last=False)
    assert len(loader) == len(torch_loader) == 3
    assert [len(labels) for _, labels in loader] == [len(labels) for _, labels in torch_loader] == [32, 32, 6]


def test_random_sampler_lengths_and_replacement() -> None:
    data = range(10)
    assert len(RandomSampler(data)) == len(torch_data.RandomSampler(data)) == 10
    longer = list(RandomSampler(data, num_samples=25, generator=0))
    assert len(longer) == 25 and sorted(longer[:10]) == list(range(10)) and sorted(longer[10:20]) == list(range(10))
    drawn = list(RandomSampler(data, replacement=True, num_samples=200, generator=1))
    assert len(drawn) == 200 and set(drawn) <= set(range(10)) and len(set(drawn)) < 200
    assert all(type(index) is int for index in RandomSampler(data, generator=2))
    assert list(SequentialSampler(data)) == list(torch_data.SequentialSampler(data))


@pytest.mark.parametrize(("n", "batch_size", "drop_last"), [(10, 3, False), (10, 3, True), (9, 3, True), (2, 5, False)])
def test_batch_sampler_matches_torch(n: int, batch_size: int, drop_last: bool) -> None:
    order = np.random.default_rng(n).permutation(n).tolist()
    expected = list(torch_data.BatchSampler(order, batch_size, drop_last))
    assert list(BatchSampler(order, batch_size, drop_last)) == expected
    assert list(BatchSampler(iter(order), batch_size, drop_last)) == expected
    assert len(BatchSampler(order, batch_size, drop_last)) == len(torch_data.BatchSampler(order, batch_size, drop_last))


# ------------------------------------------------------------------ default_collate
NamedSample = collections.namedtuple("NamedSample", ["image", "label"])

COLLATE_CASES = {
    "arrays": [np.ones((2, 3), dtype=np.float32), np.zeros((2, 3), dtype=np.float32)],
    "python_ints": [1, 2, 3],
    "python_bools": [True, False],
    "python_floats": [0.5, 1.5],
    "numpy_scalars": [np.float32(1.5), np.float32(-2.0)],
    "numpy_int32_scalars": [np.int32(1), np.int32(7)],
    "strings": ["a", "b"],
    "tuples": [(np.arange(3), 1, "x"), (np.arange(3) + 1, 2, "y")],
    "lists": [[1.0, np.zeros(2)], [2.0, np.ones(2)]],
    "dicts": [{"x": np.float64(1.0), "y": {"z": [1, 2]}}, {"x": np.float64(3.0), "y": {"z": [3, 4]}}],
    "namedtuples": [NamedSample(np.ones(2), 3), NamedSample(np.zeros(2), 4)],
    "ordered_dicts": [collections.OrderedDict(b=1, a=2.0), collections.OrderedDict(b=3, a=4.0)],
}


@pytest.mark.parametrize("name", list(COLLATE_CASES))
def test_default_collate_matches_torch(name: str) -> None:
    batch = COLLATE_CASES[name]
    assert_same_as_torch(default_collate(batch), torch_data.default_collate(batch), name)


def test_default_collate_errors() -> None:
    with pytest.raises(RuntimeError, match=r"stack expects each tensor to be equal size, but got \[3\] at entry 0 "
                                           r"and \[2\] at entry 1"):
        default_collate([np.zeros(3), np.zeros(2)])
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="batch must contain tensors, numpy arrays, numbers, dicts or lists; found <U1"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(TypeError, match="found <class 'NoneType'>"):
        default_collate([None, None])
    with pytest.raises(IndexError, match="empty batch"):
        default_collate([])
    with pytest.raises(RuntimeError, match="equal size"):
        next(iter(DataLoader(SquaresDataset(3), batch_size=2, collate_fn=lambda b: default_collate([[1], [1, 2]]))))


# ------------------------------------------------------------------ argument errors
def test_batch_size_and_drop_last_must_be_valid_like_torch() -> None:
    dataset, _ = datasets(4)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"positive integer value, but got batch_size={bad}$"):
            DataLoader(dataset, batch_size=bad)
    with pytest.raises(ValueError, match="drop_last should be a boolean value, but got drop_last=1"):
        BatchSampler(range(4), 2, 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sampler": [0, 1], "shuffle": True}, "sampler option is mutually exclusive with shuffle"),
    ({"batch_sampler": [[0]], "batch_size": 2}, "batch_sampler option is mutually exclusive with batch_size"),
    ({"batch_sampler": [[0]], "shuffle": True}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "sampler": [0]}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "drop_last": True}, "batch_sampler option is mutually exclusive"),
    ({"batch_size": None, "drop_last": True}, "mutually exclusive with drop_last"),
    ({"num_workers": -1}, "num_workers option should be non-negative"),
    ({"timeout": -1}, "timeout option should be non-negative"),
])
def test_dataloader_rejects_conflicting_options_like_torch(kwargs: dict, message: str) -> None:
    ours, theirs = datasets(4)
    with pytest.raises(ValueError, match=message):
        torch_data.DataLoader(theirs, **kwargs)
    with pytest.raises(ValueError, match=message):
        DataLoader(ours, **kwargs)


def test_dataloader_refuses_worker_processes_and_bad_generators() -> None:
    dataset, _ = datasets(4)
    with pytest.raises(NotImplementedError, match=r"main process only: use num_workers=0 \(got 2\)"):
        DataLoader(dataset, num_workers=2)
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator, an int seed or None, but got str"):
        DataLoader(dataset, shuffle=True, generator="seed")
    with pytest.raises(TypeError, match="replacement should be a boolean value, but got replacement=1"):
        RandomSampler(range(3), replacement=1)
    with pytest.raises(ValueError, match="num_samples should be a positive integer value, but got num_samples=0"):
        RandomSampler(range(3), num_samples=0)
    with pytest.raises(ValueError, match="num_samples=0"):
        DataLoader(TensorDataset(np.zeros((0, 2))), shuffle=True)


# ------------------------------------------------------------------ ConcatDataset, Subset, random_split
def test_concat_dataset_indexes_and_refuses_like_torch() -> None:
    parts = [list(range(0, 3)), [], list(range(10, 14)), [99]]
    ours, theirs = ConcatDataset(parts), torch_data.ConcatDataset(parts)
    assert len(ours) == len(theirs) == 8 and ours.cumulative_sizes == theirs.cumulative_sizes
    for index in range(-10, 10):
        assert outcome(lambda i=index: ours[i]) == outcome(lambda i=index: theirs[i]), index
    assert outcome(lambda: ConcatDataset([])) == outcome(lambda: torch_data.ConcatDataset([]))
    first, second = datasets(3)[0], datasets(2, seed=1)[0]
    joined = first + second
    assert isinstance(joined, ConcatDataset) and len(joined) == 5
    np.testing.assert_array_equal(joined[3][0], second[0][0])


def test_subset_indexes_by_int_and_list_like_torch() -> None:
    data, indices = list(range(100, 110)), [7, 2, 2, -1, 0]
    ours, theirs = Subset(np.array(data), indices), torch_data.Subset(np.array(data), indices)
    assert len(ours) == len(theirs) == 5
    for index in [*range(-6, 6), [4, 0, 1]]:
        kind, value = outcome(lambda i=index: ours[i])
        torch_kind, torch_value = outcome(lambda i=index: theirs[i])
        assert kind == torch_kind and np.array_equal(value, torch_value), index


@pytest.mark.parametrize("n, lengths", [
    (10, [3, 7]), (10, [0.3, 0.7]), (30, [0.3, 0.3, 0.4]), (7, [0.5, 0.5]), (11, [0.25] * 4),
    (5, [1.0]), (3, [0.1, 0.1, 0.8]), (10, [4, 5]), (10, [0.6, 0.6]), (10, [1.5, -0.5]), (0, [0.5, 0.5]),
])
def test_random_split_sizes_and_errors_match_torch_and_partition_the_dataset(n: int, lengths: list) -> None:
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        ours = outcome(lambda: random_split(range(n), lengths, generator=0))
    with warnings.catch_warnings(record=True) as torch_warned:
        warnings.simplefilter("always")
        theirs = outcome(lambda: torch_data.random_split(range(n), lengths, generator=torch.Generator()))
    assert [str(w.message) for w in ours_warned] == [str(w.message) for w in torch_warned]
    assert ours[0] == theirs[0]
    if ours[0] != "ok":
        assert ours[1] == theirs[1]
        return
    assert [len(split) for split in ours[1]] == [len(split) for split in theirs[1]]
    taken = [sample for split in ours[1] for sample in split]
    assert sorted(taken) == list(range(n))  # every sample once: the splits do not overlap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the zero-length warning, checked above
        again = random_split(range(n), lengths, generator=np.random.default_rng(0))
    assert [list(split) for split in again] == [list(split) for split in ours[1]]  # a seed reproduces it


def test_random_split_refuses_negative_lengths_that_torch_lets_through() -> None:
    with pytest.raises(ValueError, match=r"random_split: length at index 0 must be a non-negative int, got -2"):
        random_split(range(5), [-2, 7])


def test_loader_over_a_subset_gathers_the_batches_collating_gives_and_torch_gives() -> None:
    ours, theirs = datasets(40, seed=5)
    indices = [int(i) for i in np.random.default_rng(6).permutation(40)[:23]] + [-1, 3]
    order = [int(i) for i in np.random.default_rng(7).permutation(25)]
    fast = list(DataLoader(Subset(ours, indices), batch_size=4, sampler=order))
    slow = list(DataLoader(Subset(ours, indices), batch_size=4, sampler=order, collate_fn=default_collate_copy))
    torch_batches = list(torch_data.DataLoader(torch_data.Subset(theirs, indices), batch_size=4, sampler=order))
    assert len(fast) == len(slow) == len(torch_batches) == 7
    assert DataLoader(Subset(ours, indices), batch_size=4)._whole_batch_rows() is not None  # the one-gather road
    for position, (batch, slow_batch, torch_batch) in enumerate(zip(fast, slow, torch_batches)):
        assert_same_as_torch(batch, torch_batch, f"batch {position}")
        assert_same_as_torch(slow_batch, torch_batch, f"collated batch {position}")


def default_collate_copy(batch: list) -> object:
    """default_collate behind another name, so that the loader collates sample by sample."""
    return default_collate(batch)


# ------------------------------------------------------------------ IterableDataset
def _streams(n: int, sized: bool = True):
    """The same stream of (array, label, dict) samples as a tinynn and as a torch IterableDataset."""
    def samples():
        for i in range(n):
            yield np.full(2, i, np.float32), i, {"square": float(i) ** 2}

    streams = []
    for base in (IterableDataset, torch_data.IterableDataset):
        attributes = {"__iter__": lambda self: samples()}
        if sized:
            attributes["__len__"] = lambda self: n
        streams.append(type("Stream", (base,), attributes)())
    return streams


@pytest.mark.parametrize("n", [0, 7, 8])
@pytest.mark.parametrize("batch_size, drop_last", [(None, False), (1, False), (3, False), (3, True), (4, True)])
def test_loader_over_a_stream_batches_and_counts_like_torch(n, batch_size, drop_last):
    ours, theirs = _streams(n)
    loader = DataLoader(ours, batch_size=batch_size, drop_last=drop_last)
    torch_loader = torch_data.DataLoader(theirs, batch_size=batch_size, drop_last=drop_last)
    assert len(loader) == len(torch_loader)
    batches, torch_batches = list(loader), list(torch_loader)
    assert len(batches) == len(torch_batches)
    for position, (batch, torch_batch) in enumerate(zip(batches, torch_batches)):
        assert_same_as_torch(batch, torch_batch, f"batch {position}")


def test_loader_over_a_stream_refuses_what_torch_refuses():
    ours, theirs = _streams(4, sized=False)
    for kwargs in ({"shuffle": True}, {"sampler": [0, 1]}, {"batch_sampler": [[0, 1]]}):
        with pytest.raises(ValueError) as error:
            DataLoader(ours, **kwargs)
        with pytest.raises(ValueError) as torch_error:
            torch_data.DataLoader(theirs, **kwargs)
        assert str(error.value) == str(torch_error.value)
    with pytest.raises(TypeError):
        len(torch_data.DataLoader(theirs))
    with pytest.raises(TypeError):
        len(DataLoader(ours))
    assert len(list(DataLoader(ours, batch_size=3, shuffle=False))) == 2  # shuffle=False is allowed


def test_chain_and_concat_datasets_treat_streams_as_torch_does():
    (first, torch_first), (second, torch_second) = _streams(3), _streams(2)
    chained, torch_chained = first + second, torch_first + torch_second
    assert isinstance(chained, ChainDataset) and len(chained) == len(torch_chained) == 5
    for sample, torch_sample in zip(chained, torch_chained, strict=True):
        np.testing.assert_array_equal(sample[0], torch_sample[0])
        assert sample[1:] == torch_sample[1:]
    outcomes = []
    for make in (lambda: ConcatDataset([first]), lambda: torch_data.ConcatDataset([torch_first]),
                 lambda: list(ChainDataset([first, [1, 2]])),
                 lambda: list(torch_data.ChainDataset([torch_first, [1, 2]]))):
        with pytest.raises(AssertionError) as error:
            make()
        outcomes.append(str(error.value))
    assert outcomes[0] == outcomes[1] and outcomes[2] == outcomes[3]


def test_get_worker_info_is_none_in_the_main_process_as_in_torch():
    seen = []

    class Sharded(IterableDataset):
        def __iter__(self):
            seen.append(tinynn.utils.data.get_worker_info())
            return iter(range(3))

    assert torch_data.get_worker_info() is None
    assert [int(b[0]) for b in DataLoader(Sharded(), batch_size=2)] == [0, 2] and seen == [None]
