"""Device resolution and seeding that leaves torch's global state alone."""

from contextlib import contextmanager

import numpy as np
import torch


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(device) -> torch.device:
    """Turn the ``device`` parameter into an available :class:`torch.device`.

    ``"auto"`` picks CUDA, then MPS, then the CPU. Anything else is parsed by
    :class:`torch.device` and checked for availability, so that asking for a
    GPU the machine lacks fails here, with a message that says so, rather than
    deep inside the first tensor operation. CUDA without an index is the
    current CUDA device, by its index: a model fitted there is scored there
    too, whichever device is current then.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', "
            "'cuda', 'cuda:N', 'mps' or a torch.device."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine; use device='auto' or device='cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible."
            )
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    elif resolved.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"device={device!r} was requested but MPS is not available on this "
                "machine; use device='auto' or device='cpu'."
            )
    elif resolved.type != "cpu":
        raise ValueError(
            f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'."
        )
    return resolved


def draw_seed(rng: np.random.RandomState) -> int:
    """Draw a torch seed from a NumPy random state (as ``check_random_state`` gives)."""
    return int(rng.randint(np.iinfo(np.int32).max))


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A private generator on ``device``: sampling never touches the global RNG."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@contextmanager
def seeded_cpu_rng(seed: int):
    """Seed torch's CPU RNG for the block and restore it afterwards.

    ``torch.nn.Linear`` initialises its weights from the global RNG and takes no
    generator, so module construction runs inside this block. Tensors made
    without a device are made on the CPU, whatever ``torch.set_default_device``
    says: there, the CPU RNG draws them.
    """
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        # Not ``torch.manual_seed``: that also reseeds every CUDA device, whose
        # state fork_rng(devices=[]) would not restore.
        torch.default_generator.manual_seed(seed)
        yield


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of training data should be moved to ``device`` at once.

    On a CUDA device, data may take up to half of its free memory (the rest
    is for the model, activations and other processes); larger data stay on
    the host and are streamed. Free memory counts what PyTorch's allocator
    holds cached but unused (earlier fits in the process, a grid search's),
    which it hands out again. CPU and MPS share the host's memory.
    """
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return nbytes <= free // 2


def inference_dtype(device: torch.device) -> torch.dtype:
    """Float64 for scoring where the device has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64
