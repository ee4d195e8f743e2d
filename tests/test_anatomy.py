"""docs/paper.md section 2.1 ("What FDM is in code"): its numbers are the formulations' and the paper's.

The tables are recomputed with `fdm.anatomy` and must stand in the page as written, so the
page cannot drift from the code; the numbers themselves are checked against closed forms written here
from the definitions (arXiv 2306.06991, section 3; EDM Table 1), not from the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from fdm import anatomy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shares():
    return {(r["base"], r["multiplier"]): r for r in anatomy.share_rows()}


def s_closed_form(sigma: float, m: float, sigma_min: float, sigma_max: float) -> float:
    t = (sigma - sigma_min) / (sigma_max - sigma_min)
    x = m * (0.1 * t + 9.95 * t * t)
    return math.exp(-x) * (1 + x)


def test_the_page_holds_the_tables_the_code_computes():
    page = (ROOT / "docs" / "paper.md").read_text(encoding="utf-8")
    tables = anatomy.markdown().split("\n\n")
    assert len(tables) == 3
    for table in tables:
        assert table.strip() in page, table.splitlines()[0]


def test_scale_table_from_the_definitions():
    for row in anatomy.scale_rows():
        sigma = row["sigma"]
        assert row["edm_c_in"] == pytest.approx(1 / math.sqrt(sigma**2 + 0.25), rel=1e-12)
        for m in anatomy.MULTIPLIERS:
            assert row[f"s_m{m:g}"] == pytest.approx(
                s_closed_form(sigma, m, 0.002, 80.0), rel=1e-9, abs=1e-15
            )
        assert row["input_std_m2"] == pytest.approx(
            s_closed_form(sigma, 2.0, 0.002, 80.0) * math.sqrt(sigma**2 + 0.25), rel=1e-9, abs=1e-15
        )


def test_shares_of_training_draws_match_their_closed_forms(shares):
    """EDM: ln sigma ~ N(-1.2, 1.2^2); VE: log-uniform on [0.02, 100]; VP: sigma(t), t ~ U(1e-5, 1), so
    P(sigma < c) = (t(c) - 1e-5) / (1 - 1e-5) with t(c) = (sqrt(0.01 + 39.8 ln(1 + c^2)) - 0.1) / 19.9."""

    def vp_t(c):
        return (math.sqrt(0.1**2 + 2 * 19.9 * math.log1p(c * c)) - 0.1) / 19.9

    vp_max = math.sqrt(math.expm1(0.5 * 19.9 + 0.1))
    vp_min = math.sqrt(math.expm1(0.5 * 19.9 * 1e-10 + 0.1 * 1e-5))
    cdf = {
        "edm": lambda c: scipy_stats.norm.cdf((math.log(c) + 1.2) / 1.2),
        "ve": lambda c: math.log(c / 0.02) / math.log(100 / 0.02),
        "vp": lambda c: (vp_t(c) - 1e-5) / (1 - 1e-5),
    }
    ranges = {"edm": (0.002, 80.0), "ve": (0.02, 100.0), "vp": (vp_min, vp_max)}
    weights_inverse = {  # the sigma below which lambda(sigma) exceeds a cap c
        "edm": lambda c: 1 / math.sqrt(c - 4.0),  # (sigma^2 + 1/4) / (sigma / 2)^2 = 4 + 1 / sigma^2
        "ve": lambda c: 1 / math.sqrt(c),
        "vp": lambda c: 1 / math.sqrt(c),
    }
    assert len(shares) == 3 * len(anatomy.MULTIPLIERS)
    for (base, m), row in shares.items():
        star = row["sigma_at_threshold"]
        assert s_closed_form(star, m, *ranges[base]) == pytest.approx(anatomy.THRESHOLD, abs=1e-9)
        tolerance = 4 * math.sqrt(0.25 / anatomy.DRAWS)  # four Monte Carlo standard errors at most
        assert row["share_above"] == pytest.approx(cdf[base](star), abs=tolerance), (base, m)
        assert row["capped_first"] == pytest.approx(cdf[base](weights_inverse[base](5.0)), abs=tolerance)
        assert row["capped_last"] == pytest.approx(cdf[base](weights_inverse[base](500.0)), abs=tolerance)
    # The section's reading: at m = 2, s > 0.99 on 99.5% of EDM's training draws, below sigma = 6.5.
    assert shares["edm", 2.0]["share_above"] > 0.99 and 6 < shares["edm", 2.0]["sigma_at_threshold"] < 7


def test_paper_rows_are_the_papers_tables():
    rows = {(r["dataset"], r["fdm"]): r for r in anatomy.paper_rows()}
    assert rows["ffhq", "fdm_vp"]["at_50"] == (12.49, 3.07)
    assert rows["afhqv2", "fdm_edm"]["at_50"] == (2.73, 2.62)
    assert rows["cifar10", "fdm_edm"]["half"][200_000] == pytest.approx(1.93 - 1.88)
    assert rows["afhqv2", "fdm_edm"]["half"][100_000] == pytest.approx(2.73 - 2.57)
