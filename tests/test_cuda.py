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
