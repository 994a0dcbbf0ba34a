"""What only a CUDA machine can show: training there, loading elsewhere."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import remove_at_random
from numpy.testing import assert_allclose

import skvae
from skvae import GaussianVAE, _inference, _training

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

LOAD_ON_CPU = """
import pickle, sys, warnings
import numpy as np
import torch
import skvae
assert not torch.cuda.is_available()
if sys.argv[1].endswith(".pkl"):
    model = pickle.load(open(sys.argv[1], "rb"))
else:
    with warnings.catch_warnings(record=True):  # device="cuda" -> the CPU
        model = skvae.load(sys.argv[1])
assert model.device_ == torch.device("cpu"), model.device_
X = np.load(sys.argv[2])
np.save(sys.argv[3], np.column_stack([model.score_samples(X), model.transform(X)]))
"""


@pytest.fixture(scope="module")
def cuda_model(ppca):
    return GaussianVAE(n_components=2, max_iter=20, random_state=0, device="cuda").fit(
        ppca.X_train
    )


def test_auto_trains_on_the_gpu(ppca):
    vae = GaussianVAE(max_iter=2, random_state=0).fit(ppca.X_train[:100])
    assert vae.device_.type == "cuda"
    assert all(p.is_cuda for p in vae.module_.parameters())


@pytest.mark.parametrize("how", ["pickle", "save"])
def test_gpu_model_loads_and_scores_on_a_machine_without_one(
    cuda_model, ppca, tmp_path, how
):
    data_file, out_file = tmp_path / "X.npy", tmp_path / "out.npy"
    if how == "pickle":
        model_file = tmp_path / "model.pkl"
        model_file.write_bytes(pickle.dumps(cuda_model))
    else:
        model_file = tmp_path / "model.safetensors"
        skvae.save(cuda_model, model_file)
    np.save(data_file, ppca.X_test)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [sys.executable, "-c", LOAD_ON_CPU, model_file, data_file, out_file],
        check=True,
        env=env,
    )
    on_cpu = np.load(out_file)
    assert_allclose(on_cpu[:, 0], cuda_model.score_samples(ppca.X_test), rtol=1e-9)
    assert_allclose(
        on_cpu[:, 1:], cuda_model.transform(ppca.X_test), rtol=1e-9, atol=1e-12
    )


def test_gpu_scores_are_batch_invariant(cuda_model, ppca):
    X = ppca.X_test[:10]
    one_by_one = np.concatenate(
        [cuda_model.score_samples(X[i : i + 1]) for i in range(10)]
    )
    assert_allclose(one_by_one, cuda_model.score_samples(X), rtol=1e-12)


def test_gpu_fit_is_reproducible(cuda_model, ppca):
    again = GaussianVAE(n_components=2, max_iter=20, random_state=0, device="cuda")
    again.fit(ppca.X_train)
    assert_allclose(
        again.score_samples(ppca.X_test), cuda_model.score_samples(ppca.X_test)
    )


def test_cuda_rng_is_left_alone(ppca):
    torch.cuda.manual_seed(5)
    expected = torch.rand(3, device="cuda")
    torch.cuda.manual_seed(5)
    GaussianVAE(max_iter=2, random_state=0, device="cuda").fit(
        ppca.X_train[:100]
    ).sample(3)
    assert torch.equal(torch.rand(3, device="cuda"), expected)


def test_data_too_large_for_the_gpu_are_streamed_with_the_same_result(
    ppca, monkeypatch
):
    # One network trained 3 epochs (the default start would also train a
    # second, random one to compare with).
    params = dict(
        n_components=2, max_iter=3, batch_size=16, random_state=0, init="random"
    )
    on_gpu = GaussianVAE(**params, device="cuda").fit(ppca.X_train)
    devices = []
    real_device_batches = _training._device_batches

    def spy(X, batches, device):
        devices.append(X.device.type)
        return real_device_batches(X, batches, device)

    monkeypatch.setattr(_inference, "fits_on_device", lambda nbytes, device: False)
    monkeypatch.setattr(_training, "_device_batches", spy)
    monkeypatch.setattr(_training, "STREAM_CHUNK", 100)  # several chunks an epoch
    streamed = GaussianVAE(**params, device="cuda").fit(ppca.X_train)
    assert devices == ["cpu"] * 3
    assert_allclose(streamed.loss_curve_, on_gpu.loss_curve_, rtol=1e-6)
    assert_allclose(
        streamed.transform(ppca.X_test), on_gpu.transform(ppca.X_test), rtol=1e-6
    )


@pytest.mark.parametrize("decoder_variance", ["feature", "shared"])
def test_streamed_data_with_missing_entries_train_as_on_the_gpu(
    ppca, monkeypatch, decoder_variance
):
    # The streamed path with a mask: the data and the mask stay in pageable
    # host memory and each chunk is pinned on its way over; the masked
    # closed-form variance (pooled for "shared") is the same either way.
    X = remove_at_random(ppca.X_train, 0.2, 0)
    params = dict(
        n_components=2,
        max_iter=3,
        batch_size=16,
        random_state=0,
        init="random",
        decoder_variance=decoder_variance,
        device="cuda",
    )
    on_gpu = GaussianVAE(**params).fit(X)
    monkeypatch.setattr(_inference, "fits_on_device", lambda nbytes, device: False)
    monkeypatch.setattr(_training, "STREAM_CHUNK", 100)
    streamed = GaussianVAE(**params).fit(X)
    assert_allclose(streamed.loss_curve_, on_gpu.loss_curve_, rtol=1e-6)
    assert_allclose(streamed.noise_variance_, on_gpu.noise_variance_, rtol=1e-6)
    assert_allclose(streamed.score_samples(X), on_gpu.score_samples(X), rtol=1e-6)
    # And partial_fit goes on there, as on the CPU.
    assert streamed.partial_fit(X[:100]).n_iter_ == 4


def test_closed_form_detector_matches_the_cpu(ppca):
    # The default detector: a Gaussian fitted in closed form (numpy), scored
    # exactly by a Cholesky factor on the device, with NaN patterns.
    X = ppca.X_train[:500].copy()
    X_new = ppca.X_test[:100].copy()
    X_new[::3, 1] = np.nan
    fits = {
        device: skvae.VAEOutlierDetector(random_state=0, device=device).fit(X)
        for device in ("cpu", "cuda")
    }
    assert fits["cuda"].n_iter_ == 0
    np.testing.assert_array_equal(fits["cuda"].support_, fits["cpu"].support_)
    assert_allclose(
        fits["cuda"].score_samples(X_new), fits["cpu"].score_samples(X_new), rtol=1e-5
    )
    assert fits["cuda"].offset_ == pytest.approx(fits["cpu"].offset_, rel=1e-5)


# ---------------------------------------------------------------------------
# Features test_cuda.py did not reach: each is checked either against the CPU
# (a model fitted on the CPU and placed on the GPU scores, transforms,
# imputes and samples as on the CPU: every draw there comes from the CPU or
# numpy, and both score in float64), or, where training itself runs on the
# GPU (whose random streams differ from the CPU's), by reproducibility, by
# the same scores once the GPU model is placed on the CPU, and by a loose
# agreement with the CPU fit on data whose optimum is known.

SMALL_NETWORK = dict(hidden_layer_sizes=(16,), init="random", max_iter=6)
NETWORKS = {
    "mixture prior": dict(**SMALL_NETWORK, prior_components=3),
    "heteroscedastic": dict(**SMALL_NETWORK, decoder_variance="heteroscedastic"),
    "fixed variance": dict(**SMALL_NETWORK, decoder_variance=0.5),
    "linear mixture": dict(hidden_layer_sizes=(), prior_components=3, max_iter=4),
    "linear path": dict(hidden_layer_sizes=(16,), init="linear", max_iter=4),
    "marginal": dict(**SMALL_NETWORK, standardize="marginal"),
    "unstandardized": dict(hidden_layer_sizes=(), standardize=False, max_iter=4),
}


def placed_on(model, device):
    """A copy of a fitted model placed on ``device``, as loading places it."""
    moved = pickle.loads(pickle.dumps(model))
    moved.set_params(device=device)
    return pickle.loads(pickle.dumps(moved))


def assert_same_outputs(model, other, X, sample=True):
    """score_samples, transform, inverse_transform (and sample) agree."""
    assert_allclose(other.score_samples(X), model.score_samples(X), rtol=1e-9)
    Z = model.transform(X)
    assert_allclose(other.transform(X), Z, rtol=1e-9, atol=1e-11)
    assert_allclose(
        other.inverse_transform(Z), model.inverse_transform(Z), rtol=1e-9, atol=1e-9
    )
    if sample:
        assert_allclose(other.sample(20), model.sample(20), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_cpu_fitted_model_scores_alike_on_the_gpu(ppca, name, missing):
    # The scoring paths on the device: importance sampling through a mixture
    # prior or a variance head, the exact linear-mixture scores (rows of
    # shared and of scattered missing patterns), Gaussianized features.
    X = ppca.X_train[:400]
    X_new = ppca.X_test[:120]
    if missing:
        X = remove_at_random(X, 0.15, 1)
        X_new = remove_at_random(X_new, 0.15, 2)
        X_new[:40, 0] = np.nan  # a pattern many rows share
        X_new[40:60] = np.nan  # rows with nothing observed
    on_cpu = GaussianVAE(
        n_components=2, random_state=0, device="cpu", **NETWORKS[name]
    ).fit(X)
    on_gpu = placed_on(on_cpu, "cuda")
    assert on_gpu.device_.type == "cuda"
    assert all(p.is_cuda for p in on_gpu.module_.parameters())
    assert_same_outputs(on_cpu, on_gpu, X_new)


@pytest.mark.parametrize("sample_posterior", [False, True])
@pytest.mark.parametrize("hidden", [(), (16,)], ids=["gaussian", "network"])
def test_a_cpu_fitted_imputer_imputes_alike_on_the_gpu(ppca, sample_posterior, hidden):
    # Conditional means (exact for the Gaussian, self-normalised importance
    # sampling for a network) and draws (the conditional Gaussian, sampling
    # importance resampling): the draws come from numpy either way.
    X = remove_at_random(ppca.X_train[:400], 0.2, 3)
    params = dict(
        hidden_layer_sizes=hidden,
        sample_posterior=sample_posterior,
        max_iter=4,
        random_state=0,
    )
    if hidden:
        params["init"] = "random"
    on_cpu = skvae.VAEImputer(**params, device="cpu").fit(X)
    on_gpu = placed_on(on_cpu, "cuda")
    X_new = remove_at_random(ppca.X_test[:150], 0.2, 4)
    X_new[:30, 1] = np.nan
    assert_allclose(on_gpu.transform(X_new), on_cpu.transform(X_new), rtol=1e-9)
    assert_allclose(on_gpu.score_samples(X_new), on_cpu.score_samples(X_new), rtol=1e-9)


DETECTOR_NETWORK = dict(hidden_layer_sizes=(16,), init="random", max_iter=5)


@pytest.mark.filterwarnings("ignore:.*row\\(s\\) with missing entries:UserWarning")
def test_the_detectors_network_path_scores_alike_on_the_gpu(ppca):
    X = ppca.X_train[:400].copy()
    X_new = ppca.X_test[:100].copy()
    X_new[::4, 2] = np.nan
    on_cpu = skvae.VAEOutlierDetector(
        **DETECTOR_NETWORK, random_state=0, device="cpu"
    ).fit(X)
    on_gpu = placed_on(on_cpu, "cuda")
    assert on_cpu.n_iter_ > 0  # a network was trained
    for method in ("score_samples", "decision_function"):
        assert_allclose(
            getattr(on_gpu, method)(X_new), getattr(on_cpu, method)(X_new), rtol=1e-9
        )
    np.testing.assert_array_equal(on_gpu.predict(X_new), on_cpu.predict(X_new))


def test_the_detectors_network_path_trains_on_the_gpu(ppca):
    # Training, the support steps and the threshold on the GPU; the same on
    # a second run, and scored as on the CPU once placed there.
    X = ppca.X_train[:400]
    fits = [
        skvae.VAEOutlierDetector(
            **DETECTOR_NETWORK, support_fraction=0.9, random_state=0, device="cuda"
        ).fit(X)
        for _ in range(2)
    ]
    assert all(p.is_cuda for p in fits[0].module_.parameters())
    np.testing.assert_array_equal(fits[0].support_, fits[1].support_)
    assert fits[0].offset_ == fits[1].offset_
    on_cpu = placed_on(fits[0], "cpu")
    assert_allclose(
        on_cpu.score_samples(ppca.X_test), fits[0].score_samples(ppca.X_test), rtol=1e-9
    )
    assert on_cpu.offset_ == fits[0].offset_


GPU_TRAINING = {
    "mixture prior": dict(hidden_layer_sizes=(16,), prior_components=3, max_iter=20),
    "heteroscedastic": dict(
        hidden_layer_sizes=(16,), decoder_variance="heteroscedastic", max_iter=20
    ),
    "missing, early stopping": dict(max_iter=20, early_stopping=True),
    "adaptive rate": dict(max_iter=20, learning_rate="adaptive"),
    "standardize auto": dict(max_iter=10, standardize="auto"),
    "standardize off": dict(max_iter=10, standardize=False),
    "kl warm-up, beta": dict(max_iter=10, kl_warmup=5, beta=0.5, init="random"),
}


@pytest.mark.parametrize("name", list(GPU_TRAINING))
def test_features_train_on_the_gpu_reproducibly(ppca, name):
    X = ppca.X_train
    if "missing" in name:
        X = remove_at_random(X, 0.15, 5)
    params = dict(n_components=2, random_state=0, **GPU_TRAINING[name])
    fits = [GaussianVAE(**params, device="cuda").fit(X) for _ in range(2)]
    assert all(p.is_cuda for p in fits[0].module_.parameters())
    assert np.isfinite(fits[0].loss_curve_).all()
    assert_allclose(fits[1].loss_curve_, fits[0].loss_curve_, rtol=1e-12)
    X_test = ppca.X_test
    assert_allclose(fits[1].score_samples(X_test), fits[0].score_samples(X_test))
    assert_same_outputs(fits[0], placed_on(fits[0], "cpu"), X_test)
    # Another random stream than the CPU's, to a fit as good: within 0.1 nat
    # per row of the CPU's (other seeds of the CPU's streams moved these
    # scores by at most 0.056).
    cpu = GaussianVAE(**params, device="cpu").fit(X)
    assert abs(fits[0].score(X_test) - cpu.score(X_test)) < 0.1


def test_partial_fit_on_the_gpu(ppca):
    # The first chunk's closed-form start, then an epoch a chunk on the
    # device; the same on a second run, and close to the CPU's.
    chunks = np.array_split(ppca.X_train, 4)

    def fitted(device):
        vae = GaussianVAE(n_components=2, random_state=0, device=device)
        for _ in range(3):
            for chunk in chunks:
                vae.partial_fit(chunk)
        return vae

    first, second = fitted("cuda"), fitted("cuda")
    assert first.n_iter_ == 12 and first.device_.type == "cuda"
    assert all(p.is_cuda for p in first.module_.parameters())
    assert_allclose(second.loss_curve_, first.loss_curve_, rtol=1e-12)
    assert_same_outputs(first, placed_on(first, "cpu"), ppca.X_test)
    assert abs(first.score(ppca.X_test) - fitted("cpu").score(ppca.X_test)) < 0.1


def test_a_rolled_back_epoch_replays_its_draws_on_the_gpu(monkeypatch):
    # A non-finite epoch is rerun at half the rate from the same weights,
    # Adam state and generator state: as an epoch run at that rate at once.
    from skvae._device import seeded_cpu_rng
    from skvae._model import VAEModule
    from skvae._training import TrainingConfig, TrainingData, TrainingHistory

    def setup(learning_rate):
        with seeded_cpu_rng(0):
            module = VAEModule(3, 2, (8,), "tanh", "feature", 1e-4)
        module = module.to("cuda")
        generator = torch.Generator().manual_seed(0)
        X = torch.randn(256, 3, generator=generator).to("cuda")
        optimizer = _training.make_optimizer(module, learning_rate, 0.0)
        return module, optimizer, X

    config = TrainingConfig(
        n_epochs=1,
        seed=0,
        statistics_seed=0,
        batch_size=32,
        max_iter=1,
        beta=1.0,
        kl_warmup=0,
        early_stopping=False,
        n_iter_no_change=10,
        tol=1e-4,
        verbose=0,
    )
    module, optimizer, X = setup(5e-3)
    _training.train(module, optimizer, TrainingData(X), config, TrainingHistory())
    expected = [p.detach().clone() for p in module.parameters()]
    expected_variance = module.variance.clone()

    real_run_epoch = _training.run_epoch
    calls = []

    def poisoned_once(module, optimizer, *args):
        calls.append(optimizer.param_groups[0]["lr"])
        result = real_run_epoch(module, optimizer, *args)
        if len(calls) == 1:
            with torch.no_grad():
                next(module.parameters()).fill_(float("nan"))
        return result

    module, optimizer, X = setup(1e-2)
    monkeypatch.setattr(_training, "run_epoch", poisoned_once)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        _training.train(module, optimizer, TrainingData(X), config, TrainingHistory())
    assert calls == [1e-2, 5e-3]
    for parameter, value in zip(module.parameters(), expected, strict=True):
        assert torch.equal(parameter, value)
    assert torch.equal(module.variance, expected_variance)


def test_free_memory_decides_whether_data_are_streamed():
    # The real check, not a stand-in: a tensor of a quarter of the free
    # memory fits, one of all of it does not.
    device = torch.device("cuda", torch.cuda.current_device())
    free, _ = torch.cuda.mem_get_info(device)
    assert _inference.fits_on_device(free // 4, device)
    assert not _inference.fits_on_device(2 * free, device)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_training_on_a_gpu_that_is_not_the_current_one(ppca, monkeypatch):
    # Generators, pinned chunks and copies all on cuda:1 while cuda:0 is
    # current, streamed or not.
    assert torch.cuda.current_device() == 0
    X = remove_at_random(ppca.X_train, 0.1, 6)
    params = dict(n_components=2, max_iter=3, random_state=0, init="random")
    on_one = GaussianVAE(**params, device="cuda:1").fit(X)
    assert all(p.device == torch.device("cuda", 1) for p in on_one.module_.parameters())
    monkeypatch.setattr(_inference, "fits_on_device", lambda nbytes, device: False)
    monkeypatch.setattr(_training, "STREAM_CHUNK", 100)
    streamed = GaussianVAE(**params, device="cuda:1").fit(X)
    assert_allclose(streamed.loss_curve_, on_one.loss_curve_, rtol=1e-6)
    assert_same_outputs(on_one, placed_on(on_one, "cpu"), ppca.X_test)


@pytest.mark.parametrize(
    "params",
    [
        dict(prior_components=3, hidden_layer_sizes=(16,)),
        dict(decoder_variance="heteroscedastic", hidden_layer_sizes=(16,), max_iter=6),
        dict(early_stopping=True),
    ],
    ids=["mixture prior", "heteroscedastic", "early stopping"],
)
def test_streamed_features_train_as_on_the_gpu(ppca, monkeypatch, params):
    # The streamed path (host data, validation rows on the host too) with a
    # mixture prior, a variance head and early stopping.
    X = remove_at_random(ppca.X_train, 0.1, 7)
    params = {
        **dict(
            n_components=2,
            max_iter=4,
            batch_size=16,
            random_state=0,
            init="random",
            device="cuda",
        ),
        **params,
    }
    on_gpu = GaussianVAE(**params).fit(X)
    monkeypatch.setattr(_inference, "fits_on_device", lambda nbytes, device: False)
    monkeypatch.setattr(_training, "STREAM_CHUNK", 100)
    streamed = GaussianVAE(**params).fit(X)
    assert_allclose(streamed.loss_curve_, on_gpu.loss_curve_, rtol=1e-6)
    if on_gpu.validation_scores_ is not None:
        assert_allclose(
            streamed.validation_scores_, on_gpu.validation_scores_, rtol=1e-6
        )
    assert_allclose(streamed.score_samples(X), on_gpu.score_samples(X), rtol=1e-5)
