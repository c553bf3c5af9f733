"""Plain-language verdicts, caveats and convergence warnings of one analysis's tasks (the
``summarise`` stage's words)."""

from __future__ import annotations


FIXED_HEAD_NOTE = (
    "jointly trained (fixed) heads are tested only against heads of their own kind: networks trained with "
    "permuted attribute labels (head_null; p over those networks). The probe permutation null is of another "
    "statistic and does not calibrate it: in simulation (experiments/fixed_head_null.py) heads trained on "
    "labels independent of the attribute exceeded its 95% point far more often than 5%, while the null of "
    "permuted-label networks kept the nominal rate.")


def absence(s: dict, alpha: float) -> str:
    """What a non-detection means: equivalence (unused within the margin) when shown, else how large an
    alignment would have gone unseen."""
    eq, m = s.get("equivalence"), s.get("equivalence_margin")
    if eq and eq["below_margin"]:
        return (f"; and the population max |WSC| is below the equivalence margin {m:g} (equivalence p {eq['p']:.3g}, "
                f"upper bound {eq['upper']:.2f}): encoded but unused, within that margin")
    tail = f"; alignment below about {s['null_q95']:.2f} (the null's 95% point) would go unseen"
    if s.get("mde") is not None:
        tail += f" (80% power at a population max |WSC| of about {s['mde']:.2f})"
    if eq:
        tail += f"; equivalence to below {m:g} not shown (p {eq['p']:.3g})"
    return tail + ", so this is no evidence that the attribute is unused"


def verdict(s: dict, probe: dict, has_perm: bool, source: str, alpha: float) -> str:
    """One plain-language line saying what was tested and what the outcome means (and does not)."""
    x = s["max_abs_wsc"]
    if source == "head" and s.get("test") != "seed_null":
        v = (f"not tested: max |WSC| {x:.3f} of the jointly trained heads; a test needs heads of networks "
             "trained with permuted attribute labels (head_null); the probe permutation null does not apply")
    elif source == "head" and s["p_adjusted"] < alpha:
        v = (f"aligned beyond training chance: max |WSC| {x:.3f} of the jointly trained heads exceeds what "
             f"networks trained with permuted attribute labels give (p_adj {s['p_adjusted']:.3g}, "
             f"{s['head_null_n']} null networks). Not shown: that the decision relies on the attribute itself "
             "rather than on what goes with it in the training design (permute within classes for that)")
    elif source == "head":
        v = (f"not detected: max |WSC| {x:.3f} of the jointly trained heads is within the null of networks trained "
             f"with permuted attribute labels (p_adj {s['p_adjusted']:.3g}; their 95% point {s['head_null_q95']:.2f}); "
             "no evidence that the attribute is unused")
    elif not has_perm:
        base = "above" if x > s["random_direction_q95"] else "within"
        v = (f"max |WSC| {x:.3f} is {base} the random-direction 95% reference; not tested "
             "(run permutations for a test)")
    elif s["p_adjusted"] is not None and s["p_adjusted"] < alpha:
        v = (f"aligned beyond chance: max |WSC| {x:.3f}, p_adj {s['p_adjusted']:.3g} -- the primary head is "
             "closer to this attribute's probe direction than to probes of permuted labels. Tested against: "
             "the attribute unrelated to the embedding. Not shown: that the decision relies on the attribute "
             "itself rather than on what goes with it (see the conditional null, --permute-within)")
    else:
        v = f"not detected: max |WSC| {x:.3f} is within the permutation null (p_adj {s['p_adjusted']:.3g})"
        v += absence(s, alpha)
    auroc = probe.get("auroc")
    if auroc is not None and auroc < 0.7:
        v += f"; caution: the probe is weak (AUROC {auroc:.2f}), so its direction is unreliable"
    return v


def caveats(s: dict, probe: dict, source: str, fit: dict, *, alpha: float, permutations: int,
            permute_within: str | None, exchangeable: float | None) -> list[str]:
    """Plain-language caveats that go with a task's verdict.

    Args:
      s: the task's summary.  probe: its held-out probe metrics.  source: "probe" or "head".
      fit: its convergence record.  alpha: the level.  permutations: permutations run (0: none).
      permute_within: the strata column of a conditional null.  exchangeable: share of rows a grouped
      permutation can exchange (None without groups).
    """
    out = []
    auroc = probe.get("auroc")
    if auroc is not None and auroc < 0.7:
        out.append(f"the attribute is weakly encoded (probe AUROC {auroc:.2f}): its direction is unreliable, and a high "
                   "WSC with a poor probe is not evidence (the paper discounts such values itself)")
    if not fit.get("converged", True):
        out.append(f"the probe fit did not converge: {_not_converged(fit)}: its WSC is not to be trusted; raise "
                   "max_iter, lower C, or check the embeddings' scale")
    bad = {k: v for k, v in fit.get("replicates_not_converged", {}).items() if v}
    if bad:
        out.append("replicate fits that did not converge: " + ", ".join(f"{v} {k}" for k, v in bad.items())
                   + " (kept in the distributions; see diagnostics)")
    if s.get("ci"):
        if s.get("ci_method") == "corrected":
            out.append("the interval is for the population value (attenuation-corrected: probe noise shrinks "
                       "cosines toward 0, see max_abs_wsc_corrected); max_abs_wsc is the raw value (the paper's "
                       "number) and ci_raw its bootstrap interval. Judge alignment by the permutation test")
        else:
            out.append("the interval of max |WSC| is biased upward near zero (a maximum of absolute values never "
                       "reaches 0): judge alignment by the permutation test, use the interval for spread")
        if s.get("ci_fallback") and s["ci_fallback"] != "fixed_heads":     # fixed heads: basic by design
            z0 = "infinite" if s.get("ci_z0") is None else f"{s['ci_z0']:.2f}"
            why = {"extreme_z0": f"BCa's bias-corrected levels (z0 {z0}, with the acceleration) fall among the last "
                                 "few bootstrap replicates, so BCa would read an end from a handful of them",
                   "narrower_than_spread": "the BCa interval was narrower than half the bootstrap spread",
                   "excludes_median": "the BCa interval did not contain the median of the bootstrap replicates",
                   "no_reliable_direction": "no attenuation-corrected value: a probe direction's estimated "
                                            "reliability is below 0.1 (its direction is mostly noise)",
                   "fixed_heads": "the compared heads are fixed (no probe noise to correct)"}[s["ci_fallback"]]
            out.append(f"{s['ci_method']} interval instead of the requested one for max |WSC|: {why}")
        if source == "head":
            out.append("the heads are the model's own (fixed): the interval resamples the PCA projection only; "
                       "training randomness (seed variation) is not in it")
    if source == "head":
        out.append(FIXED_HEAD_NOTE)
        m = s.get("head_null_n")
        if m is not None and 1.0 / (m + 1) > alpha:
            out.append(f"only {m} null networks: the smallest attainable p is {1 / (m + 1):.3f}, above alpha, so "
                       "this test cannot reject; train more null networks")
    if permutations == 0 and source == "probe":
        out.append("no permutation test was run: compare with the random-direction reference only with care, "
                   "it is far narrower than the null of a real embedding")
    else:
        if permute_within and source == "probe":
            out.append(f"conditional null: labels were permuted within strata of {permute_within!r}, "
                       "so p tests alignment beyond what that association explains")
        if s.get("p_near_alpha"):
            out.append(f"p is within 3 Monte Carlo standard errors of alpha (or of a Holm step alpha/j) after "
                       f"{s['n_permutations']} permutations "
                       f"(p {s['p_value']:.3f} ± {s['p_value_mcse']:.3f}): the decision could flip with other "
                       "permutations; rerun with more (max_permutations)")
    if exchangeable is not None and exchangeable < 0.5:
        out.append(f"only {100 * exchangeable:.0f}% of the rows are in groups a grouped permutation can exchange: "
                   "group-level attributes barely move under the null")
    for name, st in (s.get("statistics") or {}).items():
        bad = {k.split("_")[0]: v for k, v in st.items() if k.endswith("_not_converged") and v}
        if bad:
            out.append(f"{name}: probe refits that did not converge, kept in its " +
                       " and ".join(f"{k} ({v})" for k, v in bad.items()))
    return out


def _not_converged(fit: dict) -> str:
    """Why a full-data fit is not converged, from its ``fit`` block: its estimated optimality gap
    (the criterion of certified fits), else the gradient rule's stop."""
    gap = fit.get("gap")
    if gap is not None:
        return (f"its estimated optimality gap (Newton decrement) is {gap:.1e} of the objective, above the "
                f"tolerance, after {fit['iterations']} L-BFGS iterations and the float64 Newton steps allowed")
    why = (f"it reached the iteration cap ({fit['iterations']})" if fit.get("at_cap") else
           "it stalled with the gradient above its float32 rounding floor")
    return f"{why}, max |gradient| {fit['grad_max']:.1e}, float32 floor {fit['grad_floor']:.1e}"


def convergence_warnings(fits: dict, stages: dict) -> list[str]:
    out = []
    for name, f in fits.items():
        if not f["converged"]:
            out.append(f"probe {name!r}: the full-data fit did not converge ({_not_converged(f)}); its WSC is not to be trusted")
        bad = {k: v for k, v in f["replicates_not_converged"].items() if v}
        if bad:
            out.append(f"probe {name!r}: replicate fits did not converge: "
                       + ", ".join(f"{v} of {len(stages[k].converged)} {k}" for k, v in bad.items()))
    return out



def _fmt_ci(ci) -> str:
    return "no interval" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def decision_use_verdict(stats: dict, statistic: str, margin: float, alpha: float, p_adjusted: float | None,
                         confidence: float = 0.95) -> dict:
    """``summary.decision_use``: does the decision use the attribute, by one statistic of
    ``summary.statistics`` (``statistic``) and a margin of negligible use (``margin``, in that
    statistic's units; the rule and its accuracy on networks whose use was measured by
    intervention: ``experiments/results/use_validation.md``).

    * ``"used"``: the estimate is at or above the margin and its test rejects (``p_adjusted``, Holm
      across tasks, at most ``alpha``);
    * ``"not used"``: the whole interval lies below the margin -- any use is smaller than it;
    * ``"inconclusive"`` otherwise, with the reason (a test that does not reject is no evidence of
      absence when the interval still reaches the margin).

    With ``statistic`` "counterfactual" (the decision's measured response to an intervention on the
    attribute, ``wsca analyze --counterfactual``) there is no test: "used" needs the response at or
    above the margin. An intervention that moves images off their distribution moves decisions by
    itself (on the zoo, networks that do not use an artefact moved 0.17-0.60 SD): with a control
    intervention ("used" also needs the response minus the control's, ``excess``, at or above the
    margin and its paired interval ``excess_ci`` above 0; otherwise, and without an interval,
    "inconclusive"); without one the reason says a control is the comparison to make.

    Returns ``{"verdict", "statistic", "reason", "estimate", "ci", "p_adjusted", "margin"}``."""
    s = stats.get(statistic) or {}
    est, ci = s.get("estimate"), s.get("ci")
    out = {"statistic": statistic, "estimate": est, "ci": ci, "p_adjusted": p_adjusted, "margin": margin}
    name = f"{statistic} {est:.3f} {_fmt_ci(ci)}" if est is not None else statistic

    def say(v: str, reason: str) -> dict:
        return {"verdict": v, "reason": reason, **out}

    if est is None or s.get("rank") == 0:
        why = s.get("note") or "not computed"
        return say("inconclusive", f"{statistic}: {why} (does the attribute vary within the primary's classes?)")
    measured = statistic == "counterfactual"
    tested = measured or (p_adjusted is not None and p_adjusted <= alpha)
    p_text = ("measured by intervention" if measured else
              "no test (permutations 0)" if p_adjusted is None else f"p_adj {p_adjusted:.3g}")
    controlled = measured and "excess" in s
    if controlled and est >= margin:
        ex, exci = s["excess"], s.get("excess_ci")
        text = f"response minus the control's {ex:.3f} {_fmt_ci(exci)}"
        if exci and ex >= margin and exci[0] > 1e-6:            # above 0 beyond rounding (SD units)
            return say("used", f"{name} is at or above the margin {margin:g} of negligible use and exceeds the control "
                               f"intervention's by at least the margin ({text}): measured by intervention")
        why = ("without an interval (bootstrap 0) the excess over the control cannot be shown" if not exci else
               "the control intervention moves the decision as much: the response may be the intervention's, not "
               "the attribute's" if exci[0] <= 1e-6 else
               f"it exceeds the control's by less than the margin {margin:g}")
        return say("inconclusive", f"{name} is at or above the margin {margin:g}, but {why} ({text})")
    if tested and est >= margin:
        why = ("the decision responds to the intervention by at least the margin; an intervention can move a "
               "decision by itself (images off their distribution): compare a control intervention of the same size "
               "(--counterfactual-control)" if measured else
               "the decision moves with the attribute beyond what the class explains (an observational statistic: "
               "the attribute itself or what differs with it within a class, e.g. the patients; a counterfactual, "
               "--counterfactual, tells them apart)")
        return say("used", f"{name} is at or above the margin {margin:g} of negligible use and its test rejects "
                           f"({p_text}): {why}")
    if ci and ci[1] < margin:
        extra = f"; detectable ({p_text}) but smaller than the margin" if tested else f" ({p_text})"
        return say("not used", f"the {100 * confidence:g}% interval of {name} lies below the margin {margin:g} of "
                               f"negligible use{extra}")
    if not ci:
        return say("inconclusive", f"{name}: {p_text}; without an interval (bootstrap 0) 'not used' cannot be shown")
    if tested:
        return say("inconclusive", f"{name}: detected ({p_text}) but the estimate is below the margin {margin:g} "
                                   "while the interval reaches it")
    return say("inconclusive", f"{name}: not detected ({p_text}), but the interval reaches the margin {margin:g}: "
                               "too little data to tell use from none")
