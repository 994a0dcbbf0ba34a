"""Saving and loading fitted estimators without pickle.

A model file is one safetensors file: a JSON header and raw array bytes. Its
tensors are the torch module's weights and the fitted numpy arrays; its string
metadata holds the format name and version, the class name, ``get_params()``
and every other fitted attribute as JSON, and a SHA-256 checksum of it all.
Reading it parses JSON and copies bytes, nothing else: unlike pickle, a file
from someone else cannot run code. Classes are looked up in an explicit
allowlist, never imported by name.

This module is a layer on top of the estimators: it imports them, and
nothing in the package below it imports it. What is stored is the
estimator's pickled state (``__getstate__``: the module
as CPU arrays, no optimiser), encoded by type rather than by name, so a new
estimator with more fitted attributes needs only its entry in ``_ESTIMATORS``.
"""

import dataclasses
import errno
import hashlib
import json
import os
import re
import secrets
import stat
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy
import torch
from sklearn.impute import MissingIndicator

from ._estimator import GaussianVAE
from ._imputer import VAEImputer
from ._outlier import VAEOutlierDetector
from ._training import TrainingHistory
from ._version import __version__

FORMAT_NAME = "skvae"
FORMAT_VERSION = "1"

# The only classes a file can name: everything else is refused. A new
# estimator becomes saveable by adding its class here; its fitted attributes
# need nothing more, as long as they hold numbers, strings, arrays, lists,
# tuples or dicts of these.
_ESTIMATORS = {
    cls.__name__: cls for cls in (GaussianVAE, VAEOutlierDetector, VAEImputer)
}
# The only dataclasses an attribute may hold.
_DATACLASSES = {cls.__name__: cls for cls in (TrainingHistory,)}
# The only scikit-learn helpers an attribute may hold (VAEImputer's indicator_),
# stored as their plain attributes and rebuilt without calling any code of theirs.
_HELPERS = {cls.__name__: cls for cls in (MissingIndicator,)}
# Fitted (``name_``) or private (``_name``) attributes; no dunders.
_ATTRIBUTE_NAME = re.compile(r"^(_[a-z][a-z0-9_]*|[a-z][a-z0-9_]*_)$", re.IGNORECASE)


def _storable_attribute(cls, name, params):
    """Whether ``name`` may be a stored attribute of ``cls``: what load sets.

    A fitted (``name_``) or private (``_name``) attribute, neither a parameter
    nor anything the class defines (a method, a property).
    """
    return (
        bool(_ATTRIBUTE_NAME.match(name))
        and name not in params
        and not hasattr(cls, name)
    )


_NUMERIC_KINDS = "biuf"


# -------------------------------------------------------------------- encoding


class _ToJSON:
    """Turns attribute values into JSON, moving arrays to a tensor table."""

    def __init__(self):
        self.tensors = {}

    def _array(self, array, path):
        array = np.ascontiguousarray(array)
        if array.dtype.kind in _NUMERIC_KINDS:
            self.tensors[path] = array
            return {"$array": path}
        if array.dtype.kind in "OU" and all(isinstance(v, str) for v in array.flat):
            if array.ndim != 1:
                raise TypeError(f"{path}: cannot save a {array.ndim}-d string array.")
            strings = array.tolist()
            # A "<U" array as wide as its strings, numpy's own width for them:
            # load refuses one far wider than they need.
            dtype = (
                "|O"
                if array.dtype.kind == "O"
                else np.asarray(strings, dtype=str).dtype.str
            )
            return {"$strings": strings, "dtype": dtype}
        raise TypeError(f"{path}: cannot save an array of dtype {array.dtype}.")

    def encode(self, value, path):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value)
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if isinstance(value, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"$tuple": self.encode(list(value), path)}
        if isinstance(value, dict):
            if not all(isinstance(k, str) and not k.startswith("$") for k in value):
                raise TypeError(f"{path}: cannot save a dict whose keys are not names.")
            return {k: self.encode(v, f"{path}/{k}") for k, v in value.items()}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, np.random.RandomState):
            return {"$random_state": self.encode(value.get_state(), path)}
        if type(value).__name__ in _DATACLASSES and dataclasses.is_dataclass(value):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return {"$dataclass": type(value).__name__, **self.encode(fields, path)}
        if type(value) in _HELPERS.values():
            return {
                "$helper": type(value).__name__,
                "state": self.encode(vars(value), path),
            }
        raise TypeError(
            f"{path}: cannot save a value of type {type(value).__name__}; "
            "use pickle or joblib for this estimator."
        )


class _FromJSON:
    """The inverse of :class:`_ToJSON`, refusing anything it did not write."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.used = set()

    def _array(self, key):
        if not isinstance(key, str) or key not in self.tensors or key in self.used:
            raise ValueError(f"the file refers to a missing tensor {key!r}.")
        self.used.add(key)
        return self.tensors[key]

    def decode(self, value):
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        tags = [k for k in value if k.startswith("$")]
        if not tags:
            return {k: self.decode(v) for k, v in value.items()}
        (tag,) = tags if len(tags) == 1 else (None,)
        if tag == "$array" and len(value) == 1:
            return np.array(self._array(value[tag]))
        if tag == "$strings" and set(value) == {tag, "dtype"}:
            strings, dtype = value[tag], value["dtype"]
            if not isinstance(strings, list) or not all(
                isinstance(v, str) for v in strings
            ):
                raise ValueError("a string array holds other than strings.")
            if dtype == "|O":
                return np.asarray(strings, dtype=object)
            width = max(map(len, strings), default=0)
            if not isinstance(dtype, str) or not re.fullmatch(r"<U[0-9]{1,6}", dtype):
                raise ValueError(f"unknown string dtype {dtype!r:.40}.")
            if int(dtype[2:]) < width or int(dtype[2:]) > max(width, 1) * 64:
                raise ValueError(f"string dtype {dtype!r} does not fit its strings.")
            return np.asarray(strings, dtype=np.dtype(dtype))
        if tag == "$tuple" and len(value) == 1:
            return tuple(self.decode(value[tag]))
        if tag == "$device" and len(value) == 1:
            return torch.device(value[tag])
        if tag == "$random_state" and len(value) == 1:
            rng = np.random.RandomState()
            rng.set_state(self.decode(value[tag]))
            return rng
        if tag == "$dataclass" and value[tag] in _DATACLASSES:
            fields = {k: self.decode(v) for k, v in value.items() if k != tag}
            return _DATACLASSES[value[tag]](**fields)
        if tag == "$helper" and value[tag] in _HELPERS and set(value) == {tag, "state"}:
            state = self.decode(value["state"])
            if not isinstance(state, dict) or not all(
                k.isidentifier() and not k.startswith("__") for k in state
            ):
                raise ValueError(f"invalid state for {value[tag]} in the file.")
            helper = _HELPERS[value[tag]].__new__(_HELPERS[value[tag]])
            vars(helper).update(state)
            return helper
        raise ValueError(f"unknown entry {value!r:.80} in the file.")


# ------------------------------------------------------------------- checksums


def _checksum(metadata, tensors):
    """SHA-256 over the metadata (less the checksum) and every tensor."""
    digest = hashlib.sha256()
    header = {k: v for k, v in metadata.items() if k != "sha256"}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------ public API


def save(estimator, path):
    """Save a skvae estimator to a file that cannot run code when loaded.

    Read it back with :func:`skvae.load`. The file is one safetensors file:
    the network weights and fitted arrays as raw tensors, and the parameters
    (``get_params()``), the other fitted attributes, a format version and a
    SHA-256 checksum as JSON. Loading parses JSON and copies bytes, and builds
    only skvae's own estimator classes; it refuses a truncated or modified
    file, an unknown format version and an unknown class with a
    ``ValueError``. Weights are stored from the CPU and the device is resolved
    again on load, so a model trained on a GPU loads on a machine without one.

    How it compares with the other ways to persist an estimator:

    - :mod:`pickle` and :mod:`joblib` keep working and store everything, but
      **loading runs code named in the file**: load only files you trust.
      They also tie the file to the Python classes it was written with.
    - :mod:`skops.io` (``skops.io.dump``/``skops.io.load``) writes a zip of
      JSON and arrays and rebuilds only the types you approve: here the
      estimator class and its ``TrainingHistory``, which
      :func:`skops.io.get_untrusted_types` lists for you to pass as
      ``trusted``. Safe too, once you accept those names, but a separate
      package and a trust decision at each load.
    - :func:`skvae.save`/:func:`skvae.load` need no trust decision: the file
      holds data only, the format is versioned, and the checksum catches
      corruption. The checksum is not a signature: someone who edits a file
      can recompute it, but the most they can do is give you wrong weights.

    Parameters
    ----------
    estimator : GaussianVAE, VAEOutlierDetector or VAEImputer
        The estimator, fitted or not.
    path : str or os.PathLike
        File to write, conventionally ending in ``.safetensors``. An existing
        file is replaced only once the new one is complete.

    See Also
    --------
    skvae.load : Read the file back.

    Examples
    --------
    An unfitted estimator keeps its parameters; a fitted one its weights too
    (see :func:`skvae.load`).

    >>> import os, tempfile
    >>> import skvae
    >>> path = os.path.join(tempfile.mkdtemp(), "unfitted.safetensors")
    >>> skvae.save(skvae.GaussianVAE(n_components=3), path)
    >>> skvae.load(path).n_components
    3
    """
    name = type(estimator).__name__
    if _ESTIMATORS.get(name) is not type(estimator):
        raise TypeError(
            f"save stores skvae's own estimators ({', '.join(_ESTIMATORS)}), "
            f"not {name}; use pickle or joblib for other objects."
        )
    params = estimator.get_params(deep=False)
    # The pickled state: the module as CPU arrays, no optimiser, no device.
    state = estimator.__getstate__()
    attributes = {k: v for k, v in state.items() if k not in params}
    for key in attributes:
        if not _storable_attribute(type(estimator), key, params):
            raise TypeError(
                f"cannot save attribute {key!r}: skvae.load reads only fitted "
                "(name_) and private (_name) attributes; delete it, or use pickle."
            )
    encoder = _ToJSON()
    payload = {
        "params": encoder.encode(params, "params"),
        "attributes": encoder.encode(attributes, "attributes"),
    }
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "skvae_version": __version__,
        "estimator": name,
        "payload": json.dumps(payload),
    }
    metadata["sha256"] = _checksum(metadata, encoder.tensors)
    data = safetensors.numpy.save(encoder.tensors, metadata=metadata)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; give a file's path.")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot save to {str(path)!r}: its directory {str(path.parent)!r} "
            "does not exist."
        )
    # Not mkstemp, whose file is private (0600): the saved file gets the
    # mode open() gives a new file, 0666 less the umask.
    # A file it replaces keeps its mode, as open(path, "wb") would keep it.
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    # The temporary name is at most as long as the name (one that fits fits).
    tmp = path.parent / f".{path.name[:-18]}.{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        handle = os.open(tmp, flags, 0o666)
    except OSError as exc:  # name the file asked for, not the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    try:
        with open(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before it takes the name
        if path.is_file():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """Load an estimator written by :func:`skvae.save`.

    Only JSON and raw arrays are read, so loading a file from someone else
    cannot run code (unlike :func:`pickle.load` and :func:`joblib.load`). The
    estimator is placed on its ``device`` when available, else on the CPU
    with a warning: a model trained on a GPU loads on a machine without one.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`skvae.save`.

    Returns
    -------
    estimator : GaussianVAE or another skvae estimator
        The estimator, giving bit-for-bit the outputs of the one saved.

    Raises
    ------
    ValueError
        If the file is not a complete skvae model file, was modified after it
        was written, has an unknown format version or names an unknown class.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import skvae
    >>> X = np.random.RandomState(0).normal(size=(50, 3))
    >>> vae = skvae.GaussianVAE(max_iter=3, random_state=0).fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "vae.safetensors")
    >>> skvae.save(vae, path)
    >>> restored = skvae.load(path)
    >>> bool((restored.score_samples(X) == vae.score_samples(X)).all())
    True
    """
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, a directory
        raise ValueError(f"{path} is not a regular file.")  # gives ENODEV
    with open(path, "rb"):  # PermissionError as such (safetensors says ENOENT)
        pass
    try:
        with safetensors.safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT_NAME:  # before reading the tensors
                raise ValueError(f"{path} is not an skvae model file.")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except safetensors.SafetensorError as exc:
        raise ValueError(
            f"{path} is not a readable skvae model file (truncated or corrupted?): "
            f"{exc}"
        ) from None
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has skvae file format version {version!r} (written by skvae "
            f"{metadata.get('skvae_version')}); this skvae reads version "
            f"{FORMAT_VERSION!r}. Load it with a matching skvae version."
        )
    if metadata.get("sha256") != _checksum(metadata, tensors):
        raise ValueError(
            f"{path} fails its checksum: it was modified or corrupted after it "
            "was written."
        )
    name = metadata.get("estimator")
    if name not in _ESTIMATORS:
        raise ValueError(
            f"{path} holds an estimator of unknown class {name!r}; skvae loads "
            f"only {', '.join(_ESTIMATORS)}."
        )
    try:
        return _rebuild(_ESTIMATORS[name], json.loads(metadata["payload"]), tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a valid skvae model file: {exc}") from None


def _rebuild(cls, payload, tensors):
    estimator = cls()
    decoder = _FromJSON(tensors)
    estimator.set_params(**decoder.decode(payload["params"]))
    estimator._validate_params()
    attributes = decoder.decode(payload["attributes"])
    params = estimator.get_params(deep=False)
    for name in attributes:
        if not _storable_attribute(cls, name, params):
            raise ValueError(f"attribute name {name!r} is not allowed.")
    if decoder.used != set(tensors):
        raise ValueError(f"unused tensors {sorted(set(tensors) - decoder.used)}.")
    # As unpickling does: rebuilds the module and places it on a device; a
    # fallback to the CPU warns at the line that called load.
    estimator._set_state(attributes, stacklevel=5)
    return estimator
