"""The data of benchmarks/likelihood.py: cleaned, dequantized, split, cached.

Not a script: imported by benchmarks/likelihood.py (in a module of its own so
that the cached loaders reach the parallel workers by reference).
"""

import functools
import zlib

import _common as harness
import _density_synthetic as synthetic
import numpy as np
from sklearn.model_selection import train_test_split

MAX_TRAIN, MAX_TEST = 8000, 4000
FEW_SEEDS = {"campaign": 2, "magicgamma": 2}  # the two largest data sets


@functools.cache
def prepared(name, dequantize="sparse"):
    """The rows of data set ``name``, cleaned and dequantized, and what was done.

    ``dequantize="sparse"`` adds uniform noise on [0, gap) to every column
    with fewer distinct values than half the rows, gap its smallest gap
    between distinct values. ``"repeated"`` spreads every column with a
    repeated value instead, each value v over [v, v + w), w the gap to the
    next distinct value (the largest value: the gap below it), but at least
    its share of the rows times the column's standard deviation: no value
    of any column keeps a point mass, nor a spike narrower than its share
    of the column's spread, however many distinct values the column has,
    however uneven its grid or close its values.
    """
    if name in harness.SKLEARN:
        X = harness.SKLEARN[name](return_X_y=True)[0]
    else:
        X = harness.load(name)[0]
    constant = np.ptp(X, axis=0) == 0
    X = X[:, ~constant].astype(float)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    dequantized = 0
    for column in X.T:
        values, inverse, counts = np.unique(
            column, return_inverse=True, return_counts=True
        )
        if dequantize == "sparse" and len(values) < len(X) / 2:
            column += rng.uniform(0, np.diff(values).min(), len(X))
            dequantized += 1
        elif dequantize == "repeated" and (counts > 1).any():
            gaps = np.diff(values)
            gaps = np.append(gaps, gaps[-1])
            widths = np.maximum(gaps, counts / len(X) * column.std())
            column += rng.uniform(0, 1, len(X)) * widths[inverse]
            dequantized += 1
    return X, {"dropped": int(constant.sum()), "dequantized": dequantized}


def real_split(name, seed, dequantize="sparse"):
    """A 75/25 split of the prepared rows, capped at MAX_TRAIN and MAX_TEST rows."""
    X_train, X_test = train_test_split(
        prepared(name, dequantize)[0], test_size=0.25, random_state=seed
    )
    rng = np.random.default_rng(seed)
    if len(X_train) > MAX_TRAIN:
        X_train = X_train[rng.choice(len(X_train), MAX_TRAIN, replace=False)]
    if len(X_test) > MAX_TEST:
        X_test = X_test[rng.choice(len(X_test), MAX_TEST, replace=False)]
    return X_train, X_test


@functools.cache
def synthetic_data(q, n_train, n_test):
    """(X_train, X_test, params) of the synthetic data, the same for every seed."""
    return synthetic.make_synthetic(q=q, n_train=n_train, n_test=n_test)
