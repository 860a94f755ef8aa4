"""Tables of results for the terminal (and for pasting into a paper).

- `format_eval`: SAE-level metrics on saved activations (`EvalResult`).
- `format_spliced`: model-level metrics with the SAE spliced into its model (`SplicedEval`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: formatting results needs none of the code that computes them
    from monosemantic.eval.metrics import EvalResult
    from monosemantic.eval.splice import SplicedEval


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def format_eval(result: EvalResult) -> str:
    return _table(
        [
            ("tokens", f"{result.n_tokens}"),
            ("FVU", f"{result.fvu:.4f}"),
            ("explained variance", f"{result.explained_variance:.4f}"),
            ("normalised MSE", f"{result.normalized_mse:.4f}"),
            ("L0", f"{result.l0:.2f}"),
            (f"dead (no activation in {result.n_tokens} tokens)", f"{result.dead_fraction:.2%}"),
            ("dense (> 10% of tokens)", f"{result.dense_fraction:.2%}"),
        ]
    )


ILL_CONDITIONED_NATS = 0.05  # below this ablation cost, CE loss recovered divides noise by noise


def format_spliced(r: SplicedEval) -> str:
    table = _table(
        [
            ("tokens scored", f"{r.n_tokens}"),
            ("CE loss, clean", f"{r.ce_clean:.4f}"),
            ("CE loss, SAE spliced in", f"{r.ce_spliced:.4f}"),
            ("CE loss, zero-ablated", f"{r.ce_zero_ablated:.4f}"),
            ("CE loss, mean-ablated", f"{r.ce_mean_ablated:.4f}"),
            ("CE loss recovered (zero ablation)", f"{r.ce_loss_recovered:.2%}"),
            ("CE loss recovered (mean ablation)", f"{r.ce_loss_recovered_mean_ablation:.2%}"),
            ("KL(clean || spliced)", f"{r.kl_spliced:.4f}"),
            ("KL(clean || zero-ablated)", f"{r.kl_zero_ablated:.4f}"),
            ("FVU", f"{r.fvu:.4f}"),
            ("explained variance", f"{r.explained_variance:.4f}"),
            ("normalised MSE", f"{r.normalized_mse:.4f}"),
            ("L0", f"{r.l0:.2f}"),
            (f"dead (no activation in {r.n_tokens} tokens)", f"{r.dead_fraction:.2%}"),
            ("dense (> 10% of tokens)", f"{r.dense_fraction:.2%}"),
        ]
    )
    zero, mean = r.ce_zero_ablated - r.ce_clean, r.ce_mean_ablated - r.ce_clean
    if min(zero, mean) < ILL_CONDITIONED_NATS:
        table += (
            f"\nnote: ablating this hookpoint costs the model only {zero:.4f} nats (zero) / {mean:.4f} (mean), "
            "so CE loss recovered is a ratio of small differences here; compare the KLs instead"
        )
    return table
