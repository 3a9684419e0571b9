"""`python -m bench --only NAME` into a whole run: the module's figures replace that
run's, in place, and the rest stay (bench/__main__.py)."""

from __future__ import annotations

from bench.__main__ import figure_of, merge_figures, render_markdown


def fig(name: str, value: float, module: str | None = None) -> dict:
    data = {"name": name, "value": value, "unit": "x", "goal": None, "met": None,
            "baseline": None, "spread": None, "note": None, "detail": {}, "runs": []}  # fmt: skip
    return data if module is None else dict(data, module=module)


def test_a_module_run_again_replaces_its_figures_where_they_stood() -> None:
    old = [fig("a1", 1, "m.a"), fig("b1", 2, "m.b"), fig("b2", 3, "m.b"), fig("c1", 4, "m.c")]
    new = [fig("b1", 5, "m.b"), fig("b3", 6, "m.b")]
    merged = merge_figures(old, new, {"m.b"})
    assert [(f["name"], f["value"]) for f in merged] == [("a1", 1), ("b1", 5), ("b3", 6), ("c1", 4)]


def test_results_from_before_the_module_key_are_matched_by_name() -> None:
    old = [fig("a1", 1), fig("b1", 2), fig("b2", 3), fig("c1", 4)]
    new = [fig("b1", 5, "m.b"), fig("b2", 6, "m.b"), fig("b9", 7, "m.b")]
    merged = merge_figures(old, new, {"m.b"})
    assert [f["name"] for f in merged] == ["a1", "b1", "b2", "b9", "c1"]
    assert merge_figures(old, [fig("z", 1, "m.z")], {"m.z"})[-1]["name"] == "z"  # new: at the end


def test_the_page_says_which_modules_ran_again_and_compares_only_those() -> None:
    previous = {"figures": [fig("a1", 1), fig("b1", 2)], "seconds": 400}
    figures = [figure_of(fig("a1", 1)), figure_of(fig("b1", 4, "m.b"))]
    reruns = [{"modules": ["m.b"], "seconds": 90.0, "at": "2026-12-01"}]
    page = render_markdown(figures, {}, 400, False, {}, [], previous, reruns, {"b1"})
    assert "in 400 s; then `python -m bench --only` ran m.b again alone (2026-12-01, 90 s)" in page
    assert "| b1 | 2 | 4 x | +100.0 % |" in page and "| a1 |" not in page.split("## Since")[1]


def test_a_module_run_again_on_other_hardware_says_so() -> None:
    """A VM moved to another CPU between runs: the page names the partial run's CPU, so
    its figures are not read as the whole run's machine's."""
    whole = {"cpu": "AMD EPYC", "cores": 2}
    previous = {"figures": [fig("a1", 1), fig("b1", 2)], "seconds": 400}
    figures = [figure_of(fig("a1", 1)), figure_of(fig("b1", 4, "m.b"))]
    same = {"modules": ["m.a"], "seconds": 9.0, "at": "2026-11-30", "machine": whole}
    moved = {"modules": ["m.b"], "seconds": 90.0, "at": "2026-12-01",
             "machine": {"cpu": "Intel Xeon", "cores": 2}}  # fmt: skip
    page = render_markdown(figures, whole, 400, False, {}, [], previous, [same, moved], {"b1"})
    assert "ran m.a again alone (2026-11-30, 9 s), whose" in page
    assert "ran m.b again alone (2026-12-01, 90 s, on another CPU: Intel Xeon, 2 cores)" in page
    machine = page.split("## Machine")[1]
    assert (
        "- cpu: AMD EPYC" in machine and "- m.b (2026-12-01), on another CPU: Intel Xeon" in machine
    )
    assert "- m.a (" not in machine
