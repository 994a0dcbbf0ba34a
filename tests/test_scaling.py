"""Scaling out: a hyper-parameter search on a Dask cluster gives the local answer."""

import joblib
import pytest
from conftest import DEVICE
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skvae import GaussianVAE

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.mark.slow
def test_grid_search_on_a_dask_cluster_matches_the_local_search(ppca):
    search = GridSearchCV(
        GaussianVAE(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device=DEVICE),
        {"n_components": [1, 2], "decoder_variance": ["feature", "shared"]},
        cv=2,
        n_jobs=-1,
    )
    local = clone(search).set_params(n_jobs=1).fit(ppca.X_train[:500])
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_config(backend="dask"),
    ):
        with distributed.get_task_stream(client) as tasks:
            search.fit(ppca.X_train[:500])
        workers = set(client.scheduler_info()["workers"])
    # The fits ran as tasks in the cluster's worker processes.
    assert tasks.data and {task["worker"] for task in tasks.data} <= workers
    assert search.best_params_ == local.best_params_
    for split in ("split0_test_score", "split1_test_score"):
        assert_allclose(search.cv_results_[split], local.cv_results_[split], rtol=1e-6)
