"""STUB: being written."""


class Dataset:
    pass


class TensorDataset(Dataset):
    pass
