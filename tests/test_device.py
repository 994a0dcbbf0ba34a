import numpy as np
import pytest
import torch

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


def test_generators_are_private_and_reproducible():
    a = torch.randn(3, generator=make_generator(5, torch.device("cpu")))
    b = torch.randn(3, generator=make_generator(5, torch.device("cpu")))
    assert torch.equal(a, b)
    assert draw_seed(np.random.RandomState(0)) == draw_seed(np.random.RandomState(0))


def test_inference_dtype():
    assert inference_dtype(torch.device("cpu")) == torch.float64
    assert inference_dtype(torch.device("mps")) == torch.float32
