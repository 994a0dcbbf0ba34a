import pytest

from skvae.__main__ import main


@pytest.mark.slow
def test_demo_shows_the_default_vae_first_and_the_anomalies(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    start = lines.index("") + 1  # after the intro and its blank line
    table = lines[start : start + 5]
    assert len(table) == 5
    for name in ("GaussianMixture", "KernelDensity", "FactorAnalysis", "Gaussian"):
        assert any(line.startswith(name) for line in table)
    # Sorted by held-out log-likelihood, best first: the default VAE on top.
    assert table[0].startswith("GaussianVAE() (defaults)")
    scores = [float(line.split()[-4]) for line in table]
    assert scores == sorted(scores, reverse=True)
    assert out.count("log-likelihood") >= 5
    # What the default chose, in words: on this data, its kept start.
    assert "GaussianVAE chose: features" in out
    assert "closed-form start" in out or "a network trained" in out
