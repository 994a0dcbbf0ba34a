import copy
import importlib.metadata
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as safetensors
import torch
from conftest import DEVICE
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError

import skvae
from skvae import GaussianVAE, VAEImputer, VAEOutlierDetector, load
from skvae import _persistence as persistence
from skvae._device import resolve_device

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device=DEVICE)


@pytest.fixture(scope="module")
def fitted(ppca):
    return GaussianVAE(n_components=2, **SMALL).fit(ppca.X_train[:200])


@pytest.fixture
def saved(fitted, tmp_path):
    path = tmp_path / "model.safetensors"
    skvae.save(fitted, path)
    return path


def assert_same_outputs(restored, original, X):
    assert_array_equal(restored.transform(X), original.transform(X))
    assert_array_equal(restored.score_samples(X), original.score_samples(X))
    Z = original.transform(X)
    assert_array_equal(restored.inverse_transform(Z), original.inverse_transform(Z))
    assert_array_equal(restored.sample(7), original.sample(7))
    assert_array_equal(restored.sample(3, random_state=5), original.sample(3, 5))


def read(path):
    with safetensors.safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def write(path, metadata, tensors, rehash=True):
    if rehash:
        metadata = {**metadata, "sha256": persistence._checksum(metadata, tensors)}
    path.write_bytes(safetensors.save(tensors, metadata=metadata))


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"decoder_variance": "heteroscedastic", "max_iter": 6},
        {"decoder_variance": "shared", "hidden_layer_sizes": ()},
        {"decoder_variance": 0.5, "standardize": False},
        {"early_stopping": True, "random_state": np.random.RandomState(3)},
        {"device": torch.device(DEVICE), "hidden_layer_sizes": [4, 3]},
        # A mixture prior on Gaussianized features; the network's random start.
        {"prior_components": 2, "standardize": "marginal"},
        {"init": "random", "prior_components": 1, "standardize": True},
    ],
)
def test_round_trip_is_bit_for_bit(ppca, params, tmp_path):
    vae = GaussianVAE(n_components=2, **{**SMALL, **params}).fit(ppca.X_train[:200])
    skvae.save(vae, tmp_path / "vae.safetensors")
    restored = load(tmp_path / "vae.safetensors")
    assert type(restored) is GaussianVAE
    assert_same_outputs(restored, vae, ppca.X_test[:40])
    saved_params, params = restored.get_params(), vae.get_params()
    if isinstance(params["random_state"], np.random.RandomState):
        state = saved_params.pop("random_state").get_state()
        expected = params.pop("random_state").get_state()
        assert_array_equal(state[1], expected[1])
        assert state[2:] == expected[2:]
    assert saved_params == params
    assert type(restored.hidden_layer_sizes) is type(vae.hidden_layer_sizes)
    for name, value in vars(vae).items():
        if name.endswith("_") and name not in ("module_", "device_"):
            assert_array_equal(getattr(restored, name), value, err_msg=name)
    assert restored.device_ == resolve_device(DEVICE)
    assert restored.partial_fit(ppca.X_train[:50]).n_iter_ == vae.n_iter_ + 1


@pytest.mark.parametrize(
    "estimator, method",
    [
        (VAEOutlierDetector(contamination=0.1, **SMALL), "decision_function"),
        (VAEOutlierDetector(**SMALL), "predict"),
        (VAEImputer(**SMALL), "transform"),
        (VAEImputer(add_indicator=True, **SMALL), "transform"),
        (GaussianVAE(**SMALL), "score_samples"),
    ],
)
def test_every_public_estimator_round_trips_with_missing_values(
    ppca, estimator, method, tmp_path
):
    X = ppca.X_train[:200].copy()
    X[np.random.default_rng(0).random(X.shape) < 0.2] = np.nan
    estimator.fit(X)
    skvae.save(estimator, tmp_path / "model.safetensors")
    restored = load(tmp_path / "model.safetensors")
    assert type(restored) is type(estimator)
    assert_array_equal(getattr(restored, method)(X), getattr(estimator, method)(X))
    for name, value in vars(estimator).items():
        if name.endswith("_") and name not in ("module_", "device_"):
            if hasattr(value, "get_params"):  # the imputer's MissingIndicator
                assert vars(getattr(restored, name)).keys() == vars(value).keys()
                for key, item in vars(value).items():
                    assert_array_equal(vars(getattr(restored, name))[key], item)
            else:
                assert_array_equal(getattr(restored, name), value, err_msg=name)


def test_training_continues_as_after_unpickling(fitted, saved, ppca):
    """The saved state is the pickled state: partial_fit goes on identically."""
    restored = load(saved).partial_fit(ppca.X_train[200:400])
    unpickled = pickle.loads(pickle.dumps(fitted)).partial_fit(ppca.X_train[200:400])
    assert restored.n_iter_ == fitted.n_iter_ + 1
    assert restored.loss_curve_ == unpickled.loss_curve_
    assert_same_outputs(restored, unpickled, ppca.X_test[:20])


def test_feature_names_and_output_config_survive(ppca, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(ppca.X_train[:100], columns=list("abcde"))
    vae = GaussianVAE(n_components=2, **SMALL).set_output(transform="pandas")
    vae.fit(frame)
    skvae.save(vae, tmp_path / "vae.safetensors")
    restored = load(tmp_path / "vae.safetensors")
    assert_array_equal(restored.feature_names_in_, list("abcde"))
    assert restored.feature_names_in_.dtype == vae.feature_names_in_.dtype
    out = restored.transform(frame)
    assert list(out.columns) == ["gaussianvae0", "gaussianvae1"]
    with pytest.raises(ValueError, match="feature names"):
        restored.transform(frame.rename(columns={"a": "z"}))


@pytest.mark.parametrize("Estimator", [GaussianVAE, VAEOutlierDetector, VAEImputer])
def test_numpy_integer_parameters_round_trip(Estimator, ppca, tmp_path):
    # As GridSearchCV sets them from np.arange.
    X = ppca.X_train[:100]
    fitted = Estimator(**{**SMALL, "n_components": np.int64(2)}).fit(X)
    skvae.save(fitted, tmp_path / "model.safetensors")
    for restored in (
        load(tmp_path / "model.safetensors"),
        pickle.loads(pickle.dumps(fitted)),
    ):
        assert_array_equal(restored.score_samples(X), fitted.score_samples(X))


def test_a_file_that_lost_n_components_still_loads(fitted, saved, ppca):
    # Files saved with a numpy integer n_components, before it was stored
    # as an int, lack it among the module's attributes: it is read off the
    # encoder's weights.
    metadata, tensors = read(saved)
    payload = json.loads(metadata["payload"])
    del payload["attributes"]["module_"]["flags"]["n_components"]
    write(saved, {**metadata, "payload": json.dumps(payload)}, tensors)
    assert_same_outputs(load(saved), fitted, ppca.X_test)


def test_the_network_is_restored_as_fitted_whatever_the_parameters_now(
    fitted, ppca, tmp_path
):
    X = ppca.X_test
    expected = fitted.score_samples(X)
    changed = copy.deepcopy(fitted).set_params(
        activation="relu", hidden_layer_sizes=(4,)
    )
    skvae.save(changed, tmp_path / "model.safetensors")
    for restored in (
        load(tmp_path / "model.safetensors"),
        pickle.loads(pickle.dumps(changed)),
    ):
        assert_array_equal(restored.score_samples(X), expected)


def test_unfitted_estimator_round_trips(tmp_path):
    skvae.save(GaussianVAE(n_components=3, max_iter=7), tmp_path / "vae.safetensors")
    restored = load(tmp_path / "vae.safetensors")
    assert restored.get_params() == GaussianVAE(n_components=3, max_iter=7).get_params()
    with pytest.raises(NotFittedError):
        restored.transform(np.zeros((1, 3)))


def test_a_gpu_model_loads_on_the_cpu(fitted, tmp_path, monkeypatch):
    """The device is resolved again on load; an absent one falls back to the CPU."""
    path = tmp_path / "vae.safetensors"
    skvae.save(copy.deepcopy(fitted).set_params(device="cuda"), path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="loaded on the CPU") as record:
        restored = load(path)
    assert record[0].filename == __file__  # the line that called load
    assert restored.device == "cuda" and restored.device_ == torch.device("cpu")
    # Bit for bit from the CPU; a GPU's float64 sums may round otherwise.
    assert_allclose(
        restored.transform(np.ones((2, 5))),
        fitted.transform(np.ones((2, 5))),
        rtol=0 if DEVICE == "cpu" else 1e-9,
    )
    _, tensors = read(path)
    assert all(isinstance(t, np.ndarray) for t in tensors.values())


def test_registering_a_subclass_with_more_fitted_attributes(
    ppca, tmp_path, monkeypatch
):
    """A new estimator with extra attributes needs only its registry entry."""

    class Detector(GaussianVAE):
        def fit(self, X, y=None):
            super().fit(X)
            self.offset_ = float(np.quantile(self.score_samples(X), 0.1))
            self.thresholds_ = np.array([1, 2], dtype=np.int32)
            return self

    path = tmp_path / "detector.safetensors"
    detector = Detector(**SMALL).fit(ppca.X_train[:100])
    with pytest.raises(TypeError, match="skvae's own estimators"):
        skvae.save(detector, path)
    monkeypatch.setitem(persistence._ESTIMATORS, "Detector", Detector)
    skvae.save(detector, path)
    restored = load(path)
    assert type(restored) is Detector and restored.offset_ == detector.offset_
    assert restored.thresholds_.dtype == np.int32
    assert_same_outputs(restored, detector, ppca.X_test[:10])


def test_an_attribute_of_unknown_type_is_refused_on_save(fitted, saved):
    before = saved.read_bytes()
    vae = pickle.loads(pickle.dumps(fitted))
    vae.extra_ = object()
    with pytest.raises(TypeError, match="extra_: cannot save a value of type object"):
        skvae.save(vae, saved)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def _requirements():
    """The package's requirements, as installed or, uninstalled, as declared."""
    try:
        return importlib.metadata.requires("skvae")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        tomllib = pytest.importorskip("tomllib")
        pyproject = Path(skvae.__file__).parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["dependencies"]


def test_a_plain_install_can_save():
    """safetensors is a requirement of the package, not an extra."""
    requirements = _requirements()
    assert any(re.match(r"safetensors\b", r) and "extra" not in r for r in requirements)


# ------------------------------------------------------------------ bad files


@pytest.mark.parametrize("keep", [0, 4, 8, 100, -1])
def test_truncated_file_is_refused(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="not a readable skvae model file"):
        load(saved)


def test_a_pickle_is_not_loaded(fitted, tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(fitted))
    with pytest.raises(ValueError, match="not a readable skvae model file"):
        load(path)


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(safetensors.save({"w": np.ones(3)}))
    with pytest.raises(ValueError, match="not an skvae model file"):
        load(path)


def test_changed_weights_fail_the_checksum(saved):
    metadata, tensors = read(saved)
    name = next(k for k in tensors if "weight" in k)
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] += 1e-6
    write(saved, metadata, tensors, rehash=False)
    with pytest.raises(ValueError, match="fails its checksum"):
        load(saved)


def test_changed_bytes_fail_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        load(saved)


def test_changed_metadata_fails_the_checksum(saved):
    metadata, tensors = read(saved)
    payload = json.loads(metadata["payload"])
    payload["params"]["n_importance_samples"] = 1
    write(saved, {**metadata, "payload": json.dumps(payload)}, tensors, rehash=False)
    with pytest.raises(ValueError, match="fails its checksum"):
        load(saved)


def test_unknown_format_version_is_refused(saved):
    metadata, tensors = read(saved)
    write(saved, {**metadata, "format_version": "2"}, tensors)
    with pytest.raises(ValueError, match="format version '2'.*reads version '1'"):
        load(saved)


@pytest.mark.parametrize("name", ["Pipeline", "os.system", "BaseGaussianVAE"])
def test_unknown_class_is_refused(saved, name):
    metadata, tensors = read(saved)
    write(saved, {**metadata, "estimator": name}, tensors)
    with pytest.raises(ValueError, match=f"unknown class '{name}'"):
        load(saved)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["attributes"].update({"__class__": "x"}), "not allowed"),
        (lambda p: p["attributes"].update({"transform": 1}), "not allowed"),
        (lambda p: p["attributes"].update({"_n_features_out": 1}), "not allowed"),
        (lambda p: p["attributes"].update({"x_": {"$pickle": "x"}}), "unknown entry"),
        (
            lambda p: p["attributes"].update({"x_": {"$array": "nope"}}),
            "missing tensor",
        ),
        (lambda p: p["params"].update({"n_components": -1}), "n_components"),
        (lambda p: p["params"].update({"evil": 1}), "Invalid parameter"),
        (
            lambda p: p["attributes"]["module_"]["flags"].update({"n_components": 3}),
            "do not fit",
        ),
        (
            lambda p: p["attributes"]["module_"]["flags"].update({"activation": "x"}),
            "Invalid module attributes",
        ),
        # Sizes that would allocate the module before its weights are checked
        # against them (a 6 KB file asked for gigabytes): nothing is allocated.
        (
            lambda p: p["attributes"]["module_"]["flags"].update(
                {"n_features": 10**12}
            ),
            "do not fit",
        ),
        # A string array far wider than its strings (2 x 800 KB for two letters).
        (
            lambda p: p["attributes"].update(
                {"feature_names_in_": {"$strings": ["a", "b"], "dtype": "<U200000"}}
            ),
            "does not fit its strings",
        ),
        (
            lambda p: p["attributes"].update(
                {"feature_names_in_": {"$strings": ["a"], "dtype": 5}}
            ),
            "unknown string dtype",
        ),
        (
            lambda p: p["attributes"].update(
                {"feature_names_in_": {"$strings": [["a"], "b"], "dtype": "|O"}}
            ),
            "other than strings",
        ),
    ],
)
def test_a_crafted_payload_is_refused(saved, edit, message):
    """Even with a valid checksum, a file only sets validated data."""
    metadata, tensors = read(saved)
    payload = json.loads(metadata["payload"])
    edit(payload)
    write(saved, {**metadata, "payload": json.dumps(payload)}, tensors)
    with pytest.raises(ValueError, match=message):
        load(saved)


def test_integer_weights_are_refused(saved):
    metadata, tensors = read(saved)
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = tensors[name].astype(np.int64)
    write(saved, metadata, tensors)
    with pytest.raises(ValueError, match="not floating-point"):
        load(saved)


def test_an_attribute_load_would_refuse_is_refused_on_save(fitted, tmp_path):
    model = copy.deepcopy(fitted)
    model.note = "x"
    with pytest.raises(TypeError, match="cannot save attribute 'note'"):
        skvae.save(model, tmp_path / "model.safetensors")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "names",
    [
        np.array(["a", "bc"], dtype="<U200"),  # wider than load takes
        np.array([], dtype="<U5"),
        np.array(["a", "bc"], dtype=object),
    ],
)
def test_a_string_array_save_writes_loads(fitted, tmp_path, names):
    model = copy.deepcopy(fitted)
    model.names_ = names
    skvae.save(model, tmp_path / "model.safetensors")
    loaded = load(tmp_path / "model.safetensors").names_
    assert_array_equal(loaded, names)
    assert loaded.dtype.kind == names.dtype.kind


def test_a_string_array_load_would_refuse_is_refused_on_save(fitted, tmp_path):
    model = copy.deepcopy(fitted)
    model.names_ = np.array([["a", "b"]])
    with pytest.raises(TypeError, match="2-d string array"):
        skvae.save(model, tmp_path / "model.safetensors")
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_loading_what_is_not_a_file_says_so_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    for path in (fifo, tmp_path):
        with pytest.raises(ValueError, match="is not a regular file"):
            load(path)


def test_a_name_as_long_as_the_system_allows_saves(fitted, tmp_path):
    # The temporary file was the name plus 18 characters: too long.
    path = tmp_path / ("m" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 1))
    skvae.save(fitted, path)
    assert_same_outputs(load(path), fitted, np.zeros((3, fitted.n_features_in_)))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_an_extra_tensor_is_refused(saved):
    metadata, tensors = read(saved)
    write(saved, metadata, {**tensors, "extra": np.zeros(2)})
    with pytest.raises(ValueError, match="unused tensors"):
        load(saved)


# ---------------------------------------------------------------------- skops


@pytest.mark.parametrize(
    "estimator, method",
    [
        (GaussianVAE(**SMALL), "score_samples"),
        (VAEOutlierDetector(**SMALL), "decision_function"),
        (VAEImputer(add_indicator=True, **SMALL), "transform"),
    ],
)
def test_skops_round_trip(ppca, estimator, method, tmp_path):
    """skops stores the estimators once their own two types are trusted."""
    sio = pytest.importorskip("skops.io")
    X = ppca.X_train[:100].copy()
    if isinstance(estimator, VAEImputer):
        X[::7, 1] = np.nan
    estimator.fit(X)
    path = tmp_path / "model.skops"
    sio.dump(estimator, path)
    untrusted = sio.get_untrusted_types(file=path)
    cls = type(estimator)
    assert set(untrusted) == {
        f"{cls.__module__}.{cls.__name__}",
        "skvae._training.TrainingHistory",
    }
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.load(path)
    restored = sio.load(path, trusted=untrusted)
    assert_array_equal(getattr(restored, method)(X), getattr(estimator, method)(X))
    if isinstance(estimator, GaussianVAE):
        assert_same_outputs(restored, estimator, ppca.X_test[:20])


def test_save_and_load_are_exported():
    assert skvae.load is persistence.load and "load" in skvae.__all__
    assert skvae.save is persistence.save and "save" in skvae.__all__


def test_save_to_a_directory_names_it(fitted, tmp_path):
    # Not the OS's "Is a directory: '.../.name.xyz' -> '...'", which names
    # the temporary file written beside it first.
    message = f"^{re.escape(repr(str(tmp_path)))} is a directory; give a file's path"
    with pytest.raises(IsADirectoryError, match=message):
        skvae.save(fitted, tmp_path)
    assert list(tmp_path.parent.glob(f".{tmp_path.name}.*")) == []


def test_save_to_a_missing_directory_names_it(fitted, tmp_path):
    path = tmp_path / "missing" / "model.safetensors"
    message = f"its directory {re.escape(repr(str(path.parent)))} does not exist"
    with pytest.raises(FileNotFoundError, match=message):
        skvae.save(fitted, path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_file_has_the_mode_of_a_new_file(fitted, tmp_path, umask):
    # As open() makes one, 0666 less the umask: mkstemp's 0600 hid saved
    # models from the group and others whatever the umask said.
    old = os.umask(umask)
    try:
        skvae.save(fitted, tmp_path / "model.safetensors")
        with open(tmp_path / "plain", "wb"):
            pass
    finally:
        os.umask(old)
    mode = (tmp_path / "model.safetensors").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "plain"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_replaced_file_keeps_its_mode(fitted, tmp_path):
    # As open(path, "wb") keeps it: a private model stays private.
    path = tmp_path / "model.safetensors"
    skvae.save(fitted, path)
    path.chmod(0o600)
    skvae.save(fitted, path)
    assert path.stat().st_mode & 0o777 == 0o600


# A value other than the default for every parameter the three estimators share.
NOT_DEFAULT = dict(
    activation="logistic",
    alpha=0.01,
    batch_size=32,
    beta=0.5,
    decoder_variance="shared",
    device=DEVICE,
    early_stopping=True,
    hidden_layer_sizes=(7, 5),
    init="random",
    kl_warmup=3,
    learning_rate="constant",
    learning_rate_init=0.002,
    max_iter=4,
    min_variance=1e-6,
    n_components=3,
    n_importance_samples=17,
    n_iter_no_change=4,
    prior_components=2,
    random_state=11,
    shrinkage=0.1,
    standardize=False,
    tol=1e-3,
    validation_fraction=0.2,
    verbose=1,
    warm_start=True,
)
OWN_NOT_DEFAULT = {
    GaussianVAE: {},
    VAEImputer: dict(missing_values=-1.0, add_indicator=True, sample_posterior=True),
    VAEOutlierDetector: dict(contamination=0.05, support_fraction=0.9),
}


@pytest.mark.parametrize("cls", [GaussianVAE, VAEImputer, VAEOutlierDetector])
@pytest.mark.parametrize("fit", [False, True], ids=["unfitted", "fitted"])
def test_every_parameter_round_trips(cls, fit, ppca, tmp_path):
    params = {**NOT_DEFAULT, **OWN_NOT_DEFAULT[cls]}
    defaults = cls().get_params()
    assert not [name for name in defaults if name not in params]
    assert not [name for name, value in params.items() if defaults[name] == value]
    estimator = cls(**params)
    if fit:
        X = ppca.X_train[:100].copy()
        if cls is VAEImputer:
            X[::4, 2] = -1.0  # missing_values' placeholder
        estimator.fit(X)
    skvae.save(estimator, tmp_path / "model.safetensors")
    restored = load(tmp_path / "model.safetensors")
    assert restored.get_params() == estimator.get_params()
    if fit and cls is VAEImputer:
        # The placeholders are imputed, not taken for data.
        assert not (restored.transform(X) == -1.0).any()
        assert_array_equal(restored.transform(X), estimator.transform(X))
