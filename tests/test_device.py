import numpy as np
import pytest
import torch
from conftest import DEVICE
from numpy.testing import assert_array_equal

from skvae._device import (
    draw_seed,
    inference_dtype,
    make_generator,
    resolve_device,
    seeded_cpu_rng,
)


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
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
    assert resolve_device("cuda:1") == torch.device("cuda:1")
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
