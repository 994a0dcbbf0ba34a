import dataclasses
import warnings

import numpy as np
import pytest
import torch
from conftest import DEVICE
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE, _training
from skvae._model import VAEModule
from skvae._training import (
    HETEROSCEDASTIC_WARMUP,
    MAX_RECOVERIES,
    TrainingConfig,
    TrainingData,
    TrainingHistory,
    epoch_generator,
    kl_weight,
    lower_learning_rate,
    make_optimizer,
    patience,
    train,
)


def setup(n=256, seed=0, decoder_variance="feature"):
    torch.manual_seed(seed)
    module = VAEModule(3, 2, (8,), "tanh", decoder_variance, 1e-4).to(DEVICE)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=generator)
    noise = torch.randn(n, 3, generator=generator) * torch.tensor([0.5, 0.5, 0.01])
    X = z @ torch.tensor([[1.0, 0.5, 1.0], [0.0, 1.0, -1.0]]) + noise
    config = TrainingConfig(
        n_epochs=150,
        seed=0,
        statistics_seed=0,
        batch_size=32,
        max_iter=150,
        beta=1.0,
        kl_warmup=0,
        early_stopping=False,
        n_iter_no_change=10,
        tol=1e-4,
        verbose=0,
    )
    return module, make_optimizer(module, 1e-2, 0.0), X, config


def one_epoch(module, optimizer, X, config):
    train(
        module,
        optimizer,
        TrainingData(X),
        dataclasses.replace(config, n_epochs=1),
        TrainingHistory(),
    )


def test_kl_weight_ramps_linearly_to_beta():
    assert [kl_weight(2.0, 4, e) for e in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert kl_weight(0.7, 0, 0) == 0.7


def test_epoch_generators_are_reproducible_and_distinct():
    device = torch.device(DEVICE)
    draw = [
        torch.rand(2, generator=epoch_generator(3, e, device), device=device)
        for e in (0, 0, 1)
    ]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


def test_training_lowers_the_loss_and_sets_the_closed_form_variance():
    module, optimizer, X, config = setup()
    history = TrainingHistory()
    converged = train(module, optimizer, TrainingData(X), config, history)
    assert converged and history.n_iter == len(history.loss_curve) < 150
    assert history.loss_curve[-1] < history.loss_curve[0] - 0.5
    # The closed-form variance is what the decoder leaves unexplained.
    assert (module.variance.cpu() < 0.5 * X.var(0)).all()


def test_weight_decay_applies_to_weights_only():
    module, *_ = setup()
    optimizer = make_optimizer(module, 1e-3, 0.25)
    decays = {
        id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]
    }
    for name, p in module.named_parameters():
        assert decays[id(p)] == (0.25 if name.endswith("weight") else 0.0)


def test_non_finite_epoch_is_rolled_back_with_a_smaller_step(monkeypatch):
    module, optimizer, X, config = setup()
    calls = []
    real_run_epoch = _training.run_epoch

    def flaky(module, optimizer, *args):
        calls.append(optimizer.param_groups[0]["lr"])
        if len(calls) == 1:
            with torch.no_grad():
                next(module.parameters()).fill_(float("nan"))
        return real_run_epoch(module, optimizer, *args)

    monkeypatch.setattr(_training, "run_epoch", flaky)
    with pytest.warns(RuntimeWarning, match="rerun with learning rate 0.005"):
        one_epoch(module, optimizer, X, config)
    assert calls == [1e-2, 5e-3]
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_persistent_divergence_is_a_clear_error(monkeypatch):
    module, optimizer, X, config = setup()

    def always_nan(module, *args):
        # As run_epoch does: tensors on the module's device.
        device = module.variance.device
        return torch.tensor(float("nan"), device=device), torch.ones(3, device=device)

    monkeypatch.setattr(_training, "run_epoch", always_nan)
    with pytest.warns(RuntimeWarning):
        with pytest.raises(ValueError, match="Lower learning_rate_init"):
            one_epoch(module, optimizer, X, config)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        1e-2 / 2 ** (MAX_RECOVERIES + 1)
    )


def test_early_stopping_keeps_the_best_validation_state():
    module, optimizer, X, config = setup(n=512)
    config.early_stopping, config.n_iter_no_change = True, 2
    history = TrainingHistory()
    stopped = train(
        module,
        optimizer,
        TrainingData(X[:400], X_val=X[400:]),
        dataclasses.replace(config, n_epochs=300),
        history,
    )
    assert stopped and history.n_iter < 300
    best = int(np.argmax(history.validation_scores))
    assert history.best_validation_score == history.validation_scores[best]
    assert history.n_iter - 1 - best > config.n_iter_no_change
    # The weights restored are the best epoch's: a run that ends at that
    # epoch trains identically up to it.
    at_best, optimizer, _, _ = setup(n=512)
    train(
        at_best,
        optimizer,
        TrainingData(X[:400], X_val=X[400:]),
        dataclasses.replace(config, n_epochs=best + 1),
        TrainingHistory(),
    )
    restored = module.state_dict()
    for name, value in at_best.state_dict().items():
        assert torch.equal(restored[name], value), name


def test_adaptive_rate_goes_on_at_a_tenth_after_each_plateau():
    # The constant rate's run, step for step, up to its plateau; then two
    # more stages at 1/10 and 1/100 of the rate, each at least a patience
    # long, which reach a lower training loss.
    module, optimizer, X, config = setup()
    config = dataclasses.replace(config, n_iter_no_change=3, tol=1e-2)
    constant = TrainingHistory()
    train(module, optimizer, TrainingData(X), config, constant)
    module, optimizer, X, _ = setup()
    config = dataclasses.replace(config, learning_rate_drops=2)
    adaptive = TrainingHistory()
    assert train(module, optimizer, TrainingData(X), config, adaptive)
    n = constant.n_iter
    assert n < config.n_epochs - 2 * (config.n_iter_no_change + 1)
    assert adaptive.loss_curve[:n] == constant.loss_curve
    assert adaptive.n_iter >= n + 2 * (config.n_iter_no_change + 1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 100)
    assert min(adaptive.loss_curve[n:]) < min(constant.loss_curve)


def test_adaptive_rate_restores_the_best_weights_at_a_plateau(monkeypatch):
    module, optimizer, X, config = setup(n=512)
    config = dataclasses.replace(
        config, early_stopping=True, n_iter_no_change=2, learning_rate_drops=1
    )
    restored = []

    def lower(module, optimizer, history, verbose):
        lower_learning_rate(module, optimizer, history, verbose)
        state = module.state_dict()
        restored.append(
            all(torch.equal(state[k], v) for k, v in history.best_state[0].items())
        )

    monkeypatch.setattr(_training, "lower_learning_rate", lower)
    history = TrainingHistory()
    train(module, optimizer, TrainingData(X[:400], X_val=X[400:]), config, history)
    assert restored == [True]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_a_plateau_at_the_starting_weights_stops_at_once():
    # Weights that never move (rate 0, fixed variance) keep the starting
    # validation ELBO: lowering the rate could not help, so training stops
    # at the first plateau, as with a constant rate.
    module, optimizer, X, config = setup(n=512, decoder_variance=0.5)
    config = dataclasses.replace(
        config, early_stopping=True, learning_rate_drops=2, learning_rate_init=0.0
    )
    history = TrainingHistory()
    train(module, optimizer, TrainingData(X[:400], X_val=X[400:]), config, history)
    assert history.n_iter == config.n_iter_no_change + 1
    assert history.kept_start


def test_a_stage_that_does_not_clearly_improve_stops_with_drops_left(monkeypatch):
    # The first stage trains a random start clearly better, so its plateau
    # lowers the rate; the "lower" rate here is 0, so the second stage
    # cannot beat the weights it started from and its plateau stops
    # training although a drop is left.
    module, optimizer, X, config = setup(n=512, decoder_variance=0.5)
    config = dataclasses.replace(
        config, early_stopping=True, n_iter_no_change=3, learning_rate_drops=2
    )
    drops = []

    def lower(module, optimizer, history, verbose):
        lower_learning_rate(module, optimizer, history, verbose)
        optimizer.param_groups[0]["lr"] = 0.0
        drops.append(history.n_iter)

    monkeypatch.setattr(_training, "lower_learning_rate", lower)
    history = TrainingHistory()
    data = TrainingData(X[:400], X_val=X[400:])
    assert train(module, optimizer, data, config, history)
    assert len(drops) == 1
    assert history.n_iter == drops[0] + config.n_iter_no_change + 1
    assert not history.kept_start


def test_patience_is_n_iter_no_change_until_a_fifth_of_the_run_is_longer(
    monkeypatch,
):
    monkeypatch.setattr(_training, "PATIENCE_GROWTH", 0.2)
    assert [patience(10, epochs) for epochs in (0, 11, 54, 55, 100, 151)] == [
        10,
        10,
        10,
        11,
        20,
        30,
    ]
    assert patience(30, 100) == 30


def _scripted_validation(monkeypatch, scores):
    """Make the validation ELBO of the i-th evaluation (0: the start) scores(i)."""
    calls = []

    def validation_elbo(module, X_val, eps, mask=None):
        calls.append(None)
        return torch.full(
            (X_val.shape[0],), scores(len(calls) - 1), dtype=torch.float64
        )

    monkeypatch.setattr(_training, "validation_elbo", validation_elbo)


@pytest.mark.parametrize(
    "growth, answer, stop, asks",
    [
        (0.0, None, 71, []),
        (0.2, None, 151, []),
        (0.2, True, 151, [71, 83, 95, 107, 119, 131]),
        (0.2, False, 71, [71]),
    ],
)
def test_a_long_run_improving_in_rare_steps_is_not_cut_short(
    monkeypatch, growth, answer, stop, asks
):
    # Sixty epochs of steady gains, then a new best only every 12th epoch up
    # to epoch 120, then none. A fixed patience of 10 stops at epoch 71,
    # missing five gains; the growing one (14 epochs by then) waits for them
    # all and stops once a fifth of the run has passed since the last.
    # more_patience is asked each time the fixed patience runs out while the
    # grown one would go on (11 epochs after each best, and once more after
    # the last); a no stops the run there.
    def scores(epoch):
        if epoch <= 60:
            return 0.01 * epoch
        if epoch <= 120 and epoch % 12 == 0:
            return 0.6 + 0.05 * (epoch - 60) / 12
        return 0.5

    _scripted_validation(monkeypatch, scores)
    monkeypatch.setattr(_training, "PATIENCE_GROWTH", growth)
    module, optimizer, X, config = setup(n=512)
    history, asked = TrainingHistory(), []

    def more_patience():
        asked.append(history.n_iter)
        return answer

    config = dataclasses.replace(
        config,
        early_stopping=True,
        n_epochs=300,
        more_patience=None if answer is None else more_patience,
    )
    assert train(
        module, optimizer, TrainingData(X[:400], X_val=X[400:]), config, history
    )
    assert history.n_iter == stop
    best = 0.6 if stop == 71 else 0.85
    assert history.best_validation_score == pytest.approx(best)
    assert not history.kept_start
    assert asked == asks


def test_the_patience_grows_from_the_end_of_the_warm_up(monkeypatch):
    # A flat validation ELBO after a KL warm-up of 100 epochs: the stopping
    # rule counts from the warm-up's last epoch, and so does the growth, so
    # training stops n_iter_no_change epochs later, as with a fixed
    # patience (counted from epoch 0, the growth would make that 20).
    _scripted_validation(monkeypatch, lambda epoch: 0.0)
    module, optimizer, X, config = setup(n=512)
    config = dataclasses.replace(
        config, early_stopping=True, n_epochs=300, kl_warmup=100
    )
    history = TrainingHistory()
    assert train(
        module, optimizer, TrainingData(X[:400], X_val=X[400:]), config, history
    )
    assert history.n_iter == 100 + config.n_iter_no_change


@pytest.mark.parametrize("final_epochs, drops", [(0, 2), (10, 2), (10, 0)])
def test_the_last_epochs_go_to_a_lower_rate(monkeypatch, final_epochs, drops):
    # A validation ELBO that rises every epoch never reaches a plateau: the
    # whole run would stay at the starting rate. With final_epochs, the stage
    # running when only they are left ends there, once: the rate drops (or,
    # without drops left, training stops there, as at a plateau, so that the
    # caller can go on at a lower rate).
    _scripted_validation(monkeypatch, lambda epoch: 0.001 * epoch)
    module, optimizer, X, config = setup(n=512)
    config = dataclasses.replace(
        config,
        early_stopping=True,
        n_epochs=100,
        learning_rate_drops=drops,
        final_epochs=final_epochs,
    )
    history = TrainingHistory()
    data = TrainingData(X[:400], X_val=X[400:])
    converged = train(module, optimizer, data, config, history)
    rate = optimizer.param_groups[0]["lr"]
    if final_epochs == 0:
        assert (history.n_iter, converged, rate) == (100, False, 1e-2)
    elif drops:
        assert (history.n_iter, converged) == (100, False)
        assert rate == pytest.approx(1e-3)
    else:
        assert (history.n_iter, converged, rate) == (90, True, 1e-2)


def test_a_fit_starts_at_learning_rate_init_and_partial_fit_keeps_the_rate():
    module, optimizer, X, config = setup()
    optimizer.param_groups[0]["lr"] = 1e-5
    one_epoch(module, optimizer, X, config)  # learning_rate_init=None
    assert optimizer.param_groups[0]["lr"] == 1e-5
    one_epoch(module, optimizer, X, dataclasses.replace(config, learning_rate_init=0.1))
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_stopping_rule_starts_after_the_kl_warm_up():
    module, optimizer, X, config = setup()
    config = dataclasses.replace(config, kl_warmup=8, beta=4.0)
    history = TrainingHistory()
    train(
        module,
        optimizer,
        TrainingData(X),
        dataclasses.replace(config, n_epochs=7),
        history,
    )
    # The KL weight grows through the warm-up, so the loss does too; the rule
    # must compare later epochs with the loss at the end of the warm-up.
    assert history.loss_curve[-1] > min(history.loss_curve)
    assert history.best_loss == history.loss_curve[-1]


@pytest.mark.parametrize("variance", ["feature", "shared"])
def test_epoch_variance_is_the_pooled_mean_squared_residual(variance):
    # Complete data take the epoch's variance from the batches' closed-form
    # variances, weighted by batch size; an all-true mask takes the other
    # path (summed squared residuals over observed entries). Both train
    # identically, so both must give the pooled mean squared residual. Batches
    # of unequal size (103 rows in 4 batches) make the weighting matter.
    results = []
    for mask in (None, torch.ones(103, 3, dtype=torch.bool)):
        torch.manual_seed(0)
        module = VAEModule(3, 2, (8,), "tanh", variance, 1e-4).to(DEVICE)
        optimizer = make_optimizer(module, 1e-2, 0.0)
        X = torch.randn(103, 3, generator=torch.Generator().manual_seed(1))
        X[:, 2] *= 10.0
        generator = epoch_generator(0, 0, torch.device(DEVICE))
        loss, mean_squared = _training.run_epoch(
            module, optimizer, X, 30, 1.0, generator, mask
        )
        results.append((loss, mean_squared))
    (loss, mean_squared), (masked_loss, masked_squared) = results
    assert torch.equal(loss, masked_loss)
    if variance == "shared":
        masked_squared = masked_squared.mean().expand_as(masked_squared)
    torch.testing.assert_close(mean_squared, masked_squared, rtol=1e-6, atol=0)


def test_validation_elbo_does_not_depend_on_its_chunks(monkeypatch):
    # With a mixture prior of many components (an averaged prior), the rows
    # are scored in chunks small enough to bound the prior's tensor; each
    # row's ELBO is the same in any chunk.
    torch.manual_seed(0)
    module = VAEModule(3, 2, (8,), "tanh", "feature", 1e-4, prior_components=30)
    module = module.to(DEVICE)
    X_val = torch.randn(50, 3, device=DEVICE)
    eps = torch.randn(50, 2, device=DEVICE)
    whole = _training.validation_elbo(module, X_val, eps)
    # 60 values per row (30 components x 2 latent dimensions): chunks of 7.
    monkeypatch.setattr(_training, "SCORE_CHUNK_ELEMENTS", 7 * 60)
    sizes, terms = [], module.training_terms

    def recorded(x, *args):
        sizes.append(x.shape[0])
        return terms(x, *args)

    monkeypatch.setattr(module, "training_terms", recorded)
    chunked = _training.validation_elbo(module, X_val, eps)
    assert max(sizes) == 7 and sum(sizes) == 50
    assert torch.isfinite(whole).all()
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


def test_restored_weights_come_with_the_variance_head_they_were_scored_with():
    # The heteroscedastic head switches on after 20 epochs. Weights from
    # before it did were restored with the switch left on: a head that was
    # never trained set the variances, and the model scored -8.44 nats/row
    # on rows whose validation ELBO was -2.23.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3)) @ rng.normal(size=(3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        vae = GaussianVAE(
            n_components=2,
            hidden_layer_sizes=(8,),
            decoder_variance="heteroscedastic",
            init="linear",
            early_stopping=True,
            max_iter=60,
            prior_components=1,
            random_state=0,
            device=DEVICE,
        ).fit(X)
    # The log-likelihood is at least the ELBO, up to the rows' spread.
    assert vae.score(X) > vae.best_validation_score_ - 0.5
    scores = np.asarray(vae.validation_scores_)
    if scores[HETEROSCEDASTIC_WARMUP:].max() <= scores[HETEROSCEDASTIC_WARMUP - 1]:
        # The last warm-up epoch was best (seed 0 on the CPU): the head is off.
        assert not vae.module_.variance_head_active
