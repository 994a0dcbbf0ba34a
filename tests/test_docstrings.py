"""The public estimators document every parameter, identically where shared.

GaussianVAE, VAEOutlierDetector and VAEImputer each write out the docs of the
parameters and fitted attributes they share, in full, as scikit-learn's
estimators do; these tests keep those copies from drifting apart
(``assert_docstring_consistency``, as in scikit-learn's
``sklearn/tests/test_docstring_parameters_consistency.py``) and keep each
signature, its ``_parameter_constraints`` and its Parameters section in step.
"""

import ast
import inspect
import os
import re
import warnings

import numpy as np
import pytest
from sklearn.utils._testing import assert_docstring_consistency

from skvae import GaussianVAE, VAEImputer, VAEOutlierDetector
from skvae._base import BaseGaussianVAE

DEVICE = os.environ.get("SKVAE_TEST_DEVICE", "cpu")
ESTIMATORS = [GaussianVAE, VAEOutlierDetector, VAEImputer]
SHARED_PARAMS = list(BaseGaussianVAE._parameter_constraints)
SHARED_ATTRS = [
    "module_",
    "device_",
    "mean_",
    "scale_",
    "init_",
    "marginal_knots_",
    "noise_variance_",
    "n_components_",
    "kl_per_component_",
    "batch_size_",
    "n_iter_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "n_features_in_",
    "feature_names_in_",
]
# Deliberate exceptions: these share their first paragraph word for word, and
# the named class adds one of its own after it.
EXTENDED_PARAMS = {
    # The detector's defaults (None and ()) and why it has them.
    "n_components": VAEOutlierDetector,
    "hidden_layer_sizes": VAEOutlierDetector,
    # The detector's default (0.2) and why it has it.
    "shrinkage": VAEOutlierDetector,
    # The detector's start also floors the variances at the data's resolution.
    "min_variance": VAEOutlierDetector,
    # The imputations use the same draws.
    "n_importance_samples": VAEImputer,
}
EXTENDED_ATTRS = {
    # A fit of the detector runs the support steps after the fit on all rows.
    "n_iter_": VAEOutlierDetector,
    "loss_curve_": VAEOutlierDetector,
    "best_loss_": VAEOutlierDetector,
}
# Defaults that differ between the classes, on purpose.
OWN_DEFAULTS = {
    "n_components",
    "prior_components",
    "hidden_layer_sizes",
    "activation",
    "init",
    "shrinkage",
    "min_variance",
    "standardize",
    "early_stopping",
    # GaussianVAE's 500 was measured on the density benchmarks; the others
    # keep MLPRegressor's 200.
    "max_iter",
}


def _entries(cls, section):
    """{name: (type line, description)} of a numpydoc section of cls's docstring.

    A plain parser, so the signature tests need no numpydoc.
    """
    doc = inspect.getdoc(cls)
    match = re.search(rf"^{section}\n-+\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)", doc, re.M | re.S)
    assert match, f"{cls.__name__} has no {section} section"
    body = match.group(1)
    entries = {}
    for name, type_line, description in re.findall(
        r"^(\w+) : ([^\n]*)\n((?:^(?:[ \t][^\n]*)?\n)*)", body, re.M
    ):
        entries[name] = (" ".join(type_line.split()), " ".join(description.split()))
    return entries


def _documented_default(type_line):
    _, sep, default = type_line.rpartition("default=")
    assert sep, f"no default in {type_line!r}"
    if default == "np.nan":  # as scikit-learn's imputers write it
        return np.nan
    return ast.literal_eval(default)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_signature_constraints_and_parameters_section_agree(cls):
    signature = inspect.signature(cls.__init__)
    names = [name for name in signature.parameters if name != "self"]
    # Its own __init__, beside its docstring, not one inherited.
    assert "__init__" in vars(cls)
    assert set(names) == set(cls._parameter_constraints)
    documented = _entries(cls, "Parameters")
    assert list(documented) == names, "documented in the order of the signature"
    for name in names:
        default = signature.parameters[name].default
        documented_default = _documented_default(documented[name][0])
        if isinstance(default, float) and np.isnan(default):
            assert isinstance(documented_default, float), name
            assert np.isnan(documented_default), name
        else:
            assert documented_default == default, name


def test_shared_defaults_and_types_are_the_same():
    reference = inspect.signature(GaussianVAE.__init__).parameters
    reference_docs = _entries(GaussianVAE, "Parameters")
    for cls in ESTIMATORS:
        params = inspect.signature(cls.__init__).parameters
        docs = _entries(cls, "Parameters")
        for name in SHARED_PARAMS:
            type_, _, _ = docs[name][0].rpartition("default=")
            assert type_ == reference_docs[name][0].rpartition("default=")[0]
            if name not in OWN_DEFAULTS:
                assert params[name].default == reference[name].default, name


def test_base_init_has_no_defaults():
    """As scikit-learn's BaseMixture: the public classes own the defaults."""
    parameters = inspect.signature(BaseGaussianVAE.__init__).parameters
    assert [p for p in parameters if p != "self"] == SHARED_PARAMS
    assert all(p.default is p.empty for p in parameters.values())
    with pytest.raises(TypeError, match="abstract"):
        BaseGaussianVAE()


def test_shared_attributes_are_documented_everywhere():
    assert list(_entries(GaussianVAE, "Attributes")) == SHARED_ATTRS
    for cls in ESTIMATORS:
        assert set(SHARED_ATTRS) <= set(_entries(cls, "Attributes")), cls


def _consistency(**kwargs):
    pytest.importorskip("numpydoc")
    # An entry missing from one class is skipped with a warning: make it fail.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_docstring_consistency(ESTIMATORS, **kwargs)


def test_shared_docs_are_identical():
    params = [p for p in SHARED_PARAMS if p not in EXTENDED_PARAMS]
    _consistency(
        include_params=[p for p in params if p not in OWN_DEFAULTS],
        include_attrs=[a for a in SHARED_ATTRS if a not in EXTENDED_ATTRS],
    )
    # Own defaults: the descriptions are identical, the type lines' defaults not.
    _consistency(
        include_params=[p for p in params if p in OWN_DEFAULTS],
        ignore_types=tuple(OWN_DEFAULTS),
    )


@pytest.mark.parametrize(
    "section, name, cls",
    [("Parameters", *item) for item in EXTENDED_PARAMS.items()]
    + [("Attributes", *item) for item in EXTENDED_ATTRS.items()],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_extended_docs_share_their_first_paragraph(section, name, cls):
    reference = _entries(GaussianVAE, section)[name][1]
    # GaussianVAE's description is the shared paragraph; the others start with
    # it, then a space (their own paragraph) or nothing.
    pattern = "^" + re.escape(reference) + "( |$)"
    key = "include_params" if section == "Parameters" else "include_attrs"
    _consistency(
        **{key: [name]},
        descr_regex_pattern=pattern,
        ignore_types=(name,) if name in OWN_DEFAULTS else (),
    )
    # A listed exception that has become identical belongs in the exact test.
    descriptions = {c: _entries(c, section)[name][1] for c in ESTIMATORS}
    assert descriptions[cls] != reference, f"{name} is no longer an exception"
    assert all(d == reference for c, d in descriptions.items() if c is not cls)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_numpydoc_validation(cls):
    validate = pytest.importorskip("numpydoc.validate").validate
    errors = validate(f"skvae.{cls.__name__}")["errors"]
    assert not errors, errors


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_documented_attributes_are_fitted(cls):
    X = np.random.default_rng(0).normal(size=(40, 3))
    est = cls(max_iter=2, hidden_layer_sizes=(4,), device=DEVICE, random_state=0)
    est.fit(X)
    documented = set(_entries(cls, "Attributes")) - {"feature_names_in_"}
    fitted = {a for a in vars(est) if a.endswith("_") and not a.startswith("_")}
    # Read from the fitted network (n_components_): there after fit only.
    properties = {
        a
        for a in dir(cls)
        if isinstance(getattr(cls, a), property)
        and a.endswith("_")
        and not a.startswith("_")
    }
    fitted |= {a for a in properties if hasattr(est, a)}
    assert not any(hasattr(cls(), a) for a in properties)
    assert fitted <= documented, "undocumented fitted attributes"
    assert documented <= fitted, "documented attributes that fit does not set"
