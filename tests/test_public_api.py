"""The public API: pinned names, docstrings with examples that run, an up-to-date reference page.

An accidental rename, removal or addition of a public name fails `test_public_names_are_pinned`;
update PUBLIC below (and docs/api.md with `python docs/gen_api.py`) when the change is intended.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest

import sparksched

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = sorted([
    # synchronous scheduler (Algorithm 1)
    "schedule", "schedule_numpy", "schedule_padded", "schedule_reference", "schedule_torch", "step_time_table",
    # asynchronous scheduler (section 5.2)
    "admit_top_k", "plan_capacity",
    # two-phase budget (vLLM-style adaptive verification)
    "assign_budget", "budget_rates", "plan_budget",
    # policies: the registry and the baselines
    "PolicySpec", "compiled_policy", "conf_threshold", "library_policy", "parse_policy", "policy_forms",
    "static", "threshold", "verify_all",
    # verifier
    "VerifyResult", "verify",
    # the price of a step (by requests, batch tokens and context) and its 1-D slice
    "StepCost", "StepPrice", "ThroughputCurve",
    # calibration (STS)
    "CalibrationReport", "apply_sts", "calibration_report", "expected_calibration_error", "fit_sts", "roc_auc",
    # engine layouts
    "PaddedBatch", "compact_vllm_flat", "mrv2_cu_num_logits", "mrv2_to_padded", "schedule_mrv2",
    "schedule_sglang", "schedule_vllm_flat", "sglang_to_padded", "verify_mrv2", "verify_sglang",
    "verify_vllm_flat", "vllm_flat_to_padded",
    # exporters and importers of the engines' table formats
    "vllm_cost_curves", "vllm_cost_table", "vllm_dynamic_k_table",
    "read_sglang_table", "sglang_additive_table", "sglang_sps_table",
    # recorded rounds (the file format engines log rounds in; the simulator and STS read it)
    "Rounds", "RoundsWriter", "read_rounds", "write_rounds",
])


def _public_objects() -> list[tuple[str, object]]:
    return [(name, getattr(sparksched, name)) for name in sorted(sparksched.__all__)]


def test_public_names_are_pinned():
    assert sorted(sparksched.__all__) == PUBLIC


def test_every_public_name_is_importable_and_nothing_else_leaks():
    for name in sparksched.__all__:
        assert hasattr(sparksched, name), name
    leaked = [n for n, v in vars(sparksched).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType) and n not in sparksched.__all__]
    assert leaked == []


def test_package_is_typed():
    assert (Path(sparksched.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_docstring_with_an_example(name):
    obj = getattr(sparksched, name)
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert "Example:" in doc or ">>>" in doc, f"{name}'s docstring has no example"


def _doctests(name: str, obj: object) -> list[doctest.DocTest]:
    module = importlib.import_module(obj.__module__)
    finder = doctest.DocTestFinder(recurse=inspect.isclass(obj))
    return [t for t in finder.find(obj, name, module=module, globs=dict(vars(module))) if t.examples]


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name):
    obj = getattr(sparksched, name)
    tests = _doctests(name, obj)
    assert tests, f"{name}: no runnable example (write it as a doctest)"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} doctest examples failed"


def _gen_api():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        return importlib.import_module("gen_api")
    finally:
        sys.path.pop(0)


def test_api_reference_is_up_to_date():
    current = (ROOT / "docs" / "api.md").read_text()
    assert current == _gen_api().render(), "docs/api.md is stale: run `python docs/gen_api.py` and commit it"


def test_policies_page_is_up_to_date_and_lists_every_policy():
    from sparksched.policies import POLICIES

    text = (ROOT / "docs" / "policies.md").read_text()
    assert text == _gen_api().render_policies(), "docs/policies.md is stale: run `python docs/gen_api.py`"
    assert all(f"`{spec.form}`" in text for spec in POLICIES.values())


def test_gen_api_check_mode_exit_codes():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_api.py"), "--help"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "--check" in proc.stdout


def test_api_reference_covers_every_public_name():
    text = (ROOT / "docs" / "api.md").read_text()
    missing = [n for n in PUBLIC if f"### `{n}" not in text]
    assert missing == []


def test_stale_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    """Negative control: the staleness check really compares (a modified page is reported)."""
    gen_api = _gen_api()
    stale = tmp_path / "api.md"
    stale.write_text(gen_api.render().replace("schedule", "schedul", 1))
    monkeypatch.setattr(gen_api, "API_MD", stale)
    assert gen_api.main(["--check"]) == 1
    stale.write_text(gen_api.render())
    assert gen_api.main(["--check"]) == 0
