import pytest

from skvae.__main__ import main


@pytest.mark.slow
def test_demo_prints_the_comparison_and_the_anomalies(capsys):
    assert main(["demo", "--n-components", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("GaussianVAE", "FactorAnalysis", "PCA", "GaussianMixture"):
        assert name in out
    assert out.count("log-likelihood") >= 5
