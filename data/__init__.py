"""Datasets of the paper, preprocessed exactly as the original code does (spec section 1).

    >>> d = data.load("lsat")            # from data_dir, $CLUE_DATA_DIR, data/raw/, or downloaded
    >>> d.x_train.shape, d.x_test.shape
    ((17432, 12), (4358, 12))"""

from data.datasets import DATASETS, Dataset, DatasetSpec, Variable, check_named, load, spec
from data.frames import from_frame
from data.sources import SOURCES, DataFileError

__all__ = ["DATASETS", "DataFileError", "Dataset", "DatasetSpec", "SOURCES", "Variable", "check_named", "from_frame",
           "load", "spec"]
