import numpy as np
import pytest
import torch
from conftest import DEVICE, exact_linear_gaussian_vae
from numpy.testing import assert_allclose, assert_array_equal

import skvae
from skvae import GaussianVAE, VAEImputer, VAEOutlierDetector, _inference, _training
from skvae._device import (
    draw_seed,
    fits_on_device,
    inference_dtype,
    make_generator,
    resolve_device,
    seeded_cpu_rng,
)
from skvae._likelihood import full_gaussian_log_prob
from skvae._training import posterior_statistics


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    # With the current device's index: scoring then runs where fit ran,
    # whichever device is current by then.
    assert resolve_device("auto") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("skvae._device._mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr("skvae._device._mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_explicit_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device(torch.device("cuda")) == torch.device("cuda:1")
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda", "CUDA is not available"),
        ("mps", "MPS is not available"),
        ("gpu", "not a valid torch device"),
        ("meta", "not supported"),
    ],
)
def test_unavailable_or_invalid_devices_are_clear_errors(monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("skvae._device._mps_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        resolve_device(device)


def test_seeded_cpu_rng_restores_the_global_state():
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    with seeded_cpu_rng(123):
        inside = torch.rand(2)
    with seeded_cpu_rng(123):
        assert torch.equal(torch.rand(2), inside)
    assert torch.equal(torch.rand(2), expected)


def global_rng_states():
    states = [torch.get_rng_state(), np.random.get_state()[1].copy()]  # noqa: NPY002
    if torch.cuda.is_available():
        states += torch.cuda.get_rng_state_all()
    return states


def test_generators_are_private_and_reproducible():
    device = torch.device(DEVICE)
    before = global_rng_states()
    # Made before either draws: two generators of one seed share no state.
    first, second = make_generator(5, device), make_generator(5, device)
    a = torch.randn(3, generator=first, device=device)
    b = torch.randn(3, generator=second, device=device)
    assert torch.equal(a, b)
    assert draw_seed(np.random.RandomState(0)) == draw_seed(np.random.RandomState(0))
    # Private: seeding and drawing moved none of torch's or NumPy's global RNGs.
    after = global_rng_states()
    assert len(after) == len(before)
    for state, expected in zip(after, before, strict=True):
        assert_array_equal(np.asarray(state), np.asarray(expected))


def test_inference_dtype():
    assert inference_dtype(torch.device("cpu")) == torch.float64
    assert inference_dtype(torch.device("mps")) == torch.float32


# MPS has no float64. These emulate a float32 device on the CPU by patching
# inference_dtype where the code under test looks it up.


def test_a_gaussian_on_a_float32_device_is_scored_in_float64_on_the_cpu(monkeypatch):
    module, marginal = exact_linear_gaussian_vae()
    module = module.cpu()
    assert module.is_gaussian
    X = marginal.rvs(size=50, random_state=0)
    seen = []

    def spy(x, mean, covariance, mask=None, factors=None):
        seen.append((x.dtype, x.device.type, covariance.dtype, factors.cholesky.dtype))
        return full_gaussian_log_prob(x, mean, covariance, mask, factors)

    monkeypatch.setattr(_inference, "full_gaussian_log_prob", spy)
    monkeypatch.setattr(_inference, "inference_dtype", lambda device: torch.float32)
    scores = _inference.log_likelihood(
        module,
        X,
        mean=np.zeros(X.shape[1]),
        scale=np.ones(X.shape[1]),
        draws=None,
        device=torch.device("cpu"),
    )
    assert seen and set(seen) == {(torch.float64, "cpu", torch.float64, torch.float64)}
    # Only the rows were rounded to float32 on their way in.
    assert_allclose(scores, marginal.logpdf(X), rtol=1e-6)


def test_posterior_statistics_sum_in_the_devices_dtype(monkeypatch):
    module, _ = exact_linear_gaussian_vae()
    module = module.cpu().float()
    X = torch.randn(40, module.n_features, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(X.shape, generator=torch.Generator().manual_seed(1)) < 0.8
    variance, kl = posterior_statistics(module, X, 0, 2, mask)
    assert kl.dtype == torch.float64
    monkeypatch.setattr(_training, "inference_dtype", lambda device: torch.float32)
    variance32, kl32 = posterior_statistics(module, X, 0, 2, mask)
    assert kl32.dtype == torch.float32
    assert_allclose(kl32.numpy(), kl.numpy(), rtol=1e-5)
    assert_allclose(variance32.numpy(), variance.numpy(), rtol=1e-5)


def test_linear_decoders_on_a_float32_device_are_exact_in_float64_on_the_cpu(
    monkeypatch,
):
    # A mixture prior's scores, posterior means and imputations, and a
    # Gaussian's conditional draws: exact, from the CPU in float64, as on a
    # float64 device, not importance-sampled.
    from skvae import GaussianVAE, VAEImputer

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(3, 2))
    Z = centres[rng.integers(3, size=400)] + rng.normal(size=(400, 2))
    X = Z @ rng.normal(size=(2, 5)) + 0.3 * rng.normal(size=(400, 5))
    X_missing = X.copy()
    X_missing[rng.random(X.shape) < 0.2] = np.nan
    small = dict(max_iter=3, random_state=0, device="cpu")
    mixture = GaussianVAE(hidden_layer_sizes=(), prior_components=3, **small).fit(X)
    imputer = VAEImputer(prior_components=3, **small).fit(X_missing)
    gaussian = VAEImputer(sample_posterior=True, **small).fit(X_missing)
    assert mixture.module_.has_linear_decoder and not mixture.module_.is_gaussian
    assert imputer.module_.has_linear_decoder and gaussian.module_.is_gaussian

    def outputs():
        return (
            mixture.score_samples(X_missing),
            mixture.transform(X_missing),
            imputer.transform(X_missing),
            gaussian.transform(X_missing),
        )

    expected = outputs()
    monkeypatch.setattr(_inference, "inference_dtype", lambda device: torch.float32)
    for got, want in zip(outputs(), expected, strict=True):
        # Only the rows were rounded to float32 on their way in.
        assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_scoring_copy_moves_to_its_device_before_its_dtype(monkeypatch):
    # An MPS tensor cannot be made float64 where it is: the copy goes to
    # the CPU first.
    module, _ = exact_linear_gaussian_vae()
    calls = []
    to = torch.nn.Module.to

    def spy(self, *args, **kwargs):
        calls.append((args, kwargs))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    copy = _inference.inference_module(module, torch.device("cpu"))
    assert calls[0] == ((torch.device("cpu"),), {})
    assert calls[1] == ((torch.float64,), {})
    assert next(copy.parameters()).dtype == torch.float64


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_global_default_device_does_not_leak_in(tmp_path):
    # torch.set_default_device("cuda") in a notebook made every tensor built
    # without a device go there: .numpy() on them failed, and the CUDA RNG
    # drew the weights. "meta" shows each such tensor, on any machine: it
    # has no data, so any that reaches numpy, a copy or a score fails.
    X = np.random.default_rng(0).normal(size=(120, 4))
    X_missing = X.copy()
    X_missing[::5, 1] = np.nan
    fitted = []
    torch.set_default_device("meta")
    try:
        for estimator, data in [
            (GaussianVAE(max_iter=3, random_state=0, device="cpu"), X_missing),
            (
                GaussianVAE(
                    standardize="marginal",
                    decoder_variance="heteroscedastic",
                    init="random",
                    max_iter=3,
                    random_state=0,
                    device="cpu",
                ),
                X,
            ),
            (VAEImputer(random_state=0, device="cpu"), X_missing),
            (VAEOutlierDetector(random_state=0, device="cpu"), X_missing),
        ]:
            first = estimator.fit(data).score_samples(data)
            scores = estimator.partial_fit(data).score_samples(data)
            if hasattr(estimator, "sample"):
                estimator.sample(3)
                estimator.inverse_transform(estimator.transform(data))
            path = tmp_path / f"{len(fitted)}.safetensors"
            skvae.save(estimator, path)
            restored = skvae.load(path).score_samples(data)
            fitted.append((scores, restored, first))
    finally:
        torch.set_default_device("cpu")
    for scores, restored, _ in fitted:
        assert np.isfinite(scores).all()
        assert_array_equal(restored, scores)
    # The fit is that of a process without the global device.
    alone = GaussianVAE(max_iter=3, random_state=0, device="cpu").fit(X_missing)
    assert_array_equal(fitted[0][2], alone.score_samples(X_missing))


def test_fits_on_device_counts_the_allocators_unused_cache(monkeypatch):
    # Memory PyTorch holds cached but unused (earlier fits in the process)
    # is free to this fit: 1,000 free bytes + 400 cached, half of it for data.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1000, 10_000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 600)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 200)
    cuda = torch.device("cuda")
    assert fits_on_device(700, cuda) and not fits_on_device(701, cuda)
    assert fits_on_device(10**12, torch.device("cpu"))
