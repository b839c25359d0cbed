"""STUB: being written."""


class Sampler:
    pass


class SequentialSampler(Sampler):
    pass


class RandomSampler(Sampler):
    pass


class BatchSampler(Sampler):
    pass
