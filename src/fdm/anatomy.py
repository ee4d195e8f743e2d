"""What FDM is in code, in numbers: the tables of docs/paper.md section 2.1, computed from the formulations.

FDM (arXiv 2306.06991, section 3; docs/paper.md section 2) keeps its base's c_skip, c_out, c_noise,
training sigma and lambda, replaces c_in by s(sigma) = exp(-m B(t)) (1 + m B(t)) and caps lambda during a
warm-up. Whether that changes training depends on where s(sigma) departs from 1 and how often training
draws such a sigma, which this module measures with the project's own formulations (`fdm.diffusion`):

- ``scale_rows``: s(sigma) for several multipliers m beside EDM's c_in = 1/sqrt(sigma^2 + sigma_data^2),
  and the standard deviation of FDM-EDM's network input, s(sigma) sqrt(sigma^2 + sigma_data^2), which is
  1 at every sigma for EDM;
- ``share_rows``: per base and m, the sigma at which s falls to ``THRESHOLD`` and the share of the base's
  training draws below it (where FDM's network input is the unscaled x to within 1%), from
  ``sample_sigma`` itself; and the share of draws whose weight the cap lowers at the first step (5) and
  the last step of the warm-up (500);
- ``paper_rows``: the paper's own tables at 50 Mimg and in the form "FDM at N/2 against the baseline at
  N" (`fdm.paper_results`).

``markdown()`` writes the tables docs/paper.md holds; tests/test_anatomy.py recomputes them and checks
the page. ``python -m fdm.anatomy`` prints them.
"""

from __future__ import annotations

import torch

from fdm import names, paper_results
from fdm.diffusion import formulation
from fdm.diffusion.fdm import CAP_END, CAP_START

SIGMAS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)
THRESHOLD = 0.99  # s(sigma) above it: the network input is x to within 1%
DRAWS = 1_000_000  # training sigmas drawn per base (the shares' Monte Carlo error is below 0.05%)
DRAW_SEED = 0
PAPER_PAIRS = {v: names.BASELINE[v] for v in paper_results.VARIANTS if v in names.BASELINE}
"""The paper's three families (flow matching, beyond the paper, is docs/paper.md section 8.1's)."""


def scale_rows(sigmas=SIGMAS, multipliers=MULTIPLIERS) -> list[dict]:
    """Per sigma: EDM's c_in, FDM-EDM's s(sigma) per m, and FDM-EDM's input standard deviation at m = 2."""
    edm = formulation("edm")
    sigma = torch.tensor(sigmas, dtype=torch.float64)
    c_in = edm.scalings(sigma)[2]
    scales = {m: formulation("fdm_edm", multiplier=m).scalings(sigma)[2] for m in multipliers}
    spread = (sigma**2 + edm.sigma_data**2).sqrt()  # std of x = y + sigma n for data of std sigma_data
    return [
        {
            "sigma": float(sigma[i]),
            "edm_c_in": float(c_in[i]),
            **{f"s_m{m:g}": float(scales[m][i]) for m in multipliers},
            "input_std_m2": float(scales[2.0][i] * spread[i]) if 2.0 in scales else None,
        }
        for i in range(len(sigmas))
    ]


def threshold_sigma(fdm, level: float = THRESHOLD) -> float:
    """The sigma at which s(sigma) falls to ``level``: s decreases from 1 at sigma_min (bisection)."""
    low, high = fdm.sigma_min, fdm.sigma_max
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if float(fdm.fdm_scale(mid)) > level else (low, mid)
    return 0.5 * (low + high)


def share_rows(multipliers=MULTIPLIERS, draws: int = DRAWS, seed: int = DRAW_SEED) -> list[dict]:
    """Per base (edm, vp, ve) and m: the sigma where s = THRESHOLD and the share of training draws below
    it; per base, the share of draws whose lambda exceeds the cap at the warm-up's first and last step."""
    rows = []
    for fdm_name, base_name in PAPER_PAIRS.items():
        base = formulation(base_name)
        sigma = base.sample_sigma(draws, torch.Generator().manual_seed(seed)).double()
        weight = base.loss_weight(sigma)
        capped = {cap: float((weight > cap).double().mean()) for cap in (CAP_START, CAP_END)}
        for m in multipliers:
            fdm = formulation(fdm_name, multiplier=m)
            rows.append(
                {
                    "base": base_name,
                    "multiplier": m,
                    "sigma_at_threshold": threshold_sigma(fdm),
                    "share_above": float((fdm.fdm_scale(sigma) > THRESHOLD).double().mean()),
                    "capped_first": capped[CAP_START],
                    "capped_last": capped[CAP_END],
                }
            )
    return rows


def paper_rows() -> list[dict]:
    """The paper's FID per dataset: each pair at 50 Mimg, and FDM at N/2 less its baseline at N."""
    rows = []
    for source in paper_results.MAIN_NFE:
        table = paper_results.fid_vs_kimg(source)
        for fdm_name, base_name in PAPER_PAIRS.items():
            fdm, base = table[fdm_name], table[base_name]
            rows.append(
                {
                    "dataset": source,
                    "fdm": fdm_name,
                    "base": base_name,
                    "at_50": (fdm[50_000], base[50_000]),
                    "half": {n: fdm[n // 2] - base[n] for n in sorted(base) if n // 2 in fdm},
                }
            )
    return rows


def _table(header, body) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(line) + " |" for line in body
    ]


def markdown() -> str:
    """The three tables of docs/paper.md section 2.1, as the page holds them."""
    scale = scale_rows()
    ms = MULTIPLIERS
    lines = ["<!-- fdm.anatomy: scale table -->"]
    lines += _table(
        ["sigma", "EDM c_in", *(f"s, m = {m:g}" for m in ms), "FDM-EDM input std, m = 2"],
        [
            [f"{r['sigma']:g}", f"{r['edm_c_in']:.4f}", *(f"{r[f's_m{m:g}']:.4f}" for m in ms),
             f"{r['input_std_m2']:.2f}"]
            for r in scale
        ],
    )  # fmt: skip
    lines += ["", "<!-- fdm.anatomy: share table -->"]
    shares = share_rows()
    lines += _table(
        ["base", "m", f"s = {THRESHOLD:g} at sigma", f"training draws with s > {THRESHOLD:g}",
         f"draws capped at step 0 (lambda > {CAP_START:g})", f"capped at the warm-up's end (lambda > {CAP_END:g})"],
        [
            [r["base"], f"{r['multiplier']:g}", f"{r['sigma_at_threshold']:.2f}", f"{100 * r['share_above']:.1f}%",
             f"{100 * r['capped_first']:.1f}%", f"{100 * r['capped_last']:.1f}%"]
            for r in shares
        ],
    )  # fmt: skip
    lines += ["", "<!-- fdm.anatomy: paper table -->"]
    paper = paper_rows()
    budgets = sorted({n for r in paper for n in r["half"]})
    lines += _table(
        ["dataset", "pair", "FID at 50 Mimg (FDM, baseline)",
         *(f"FDM at {n // 2000:g} less baseline at {n // 1000:g} Mimg" for n in budgets)],
        [
            [r["dataset"], f"{r['fdm']} / {r['base']}", f"{r['at_50'][0]:.2f}, {r['at_50'][1]:.2f}",
             *(f"{r['half'][n]:+.2f}" for n in budgets)]
            for r in paper
        ],
    )  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
