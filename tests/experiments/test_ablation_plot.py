"""The ablation chart's legend stays off its bars (it covered them: accuracies near 1 reach the top)."""

import monosemantic.plots as plots


def test_the_ablation_legend_covers_no_bar(tmp_path, monkeypatch):
    drawn = []
    save = plots.save_figure

    def keep(fig, path):
        out = save(fig, path)  # laid out and written as users get it
        drawn.append(fig)
        return out

    monkeypatch.setattr(plots, "save_figure", keep)
    metrics = ["answer_accuracy", "target_prob", "logit_diff_acc"]
    summary = {c: {m: (0.97, 0.95, 0.99) for m in metrics} for c in ("clean", "ablated", "control")}
    path = plots.plot_ablation(summary, metrics, ["accuracy", "P(target)", "logit diff"], "t", tmp_path / "a.png")
    assert path.stat().st_size > 0
    fig = drawn[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches]
    assert len(bars) == 9 and not any(legend.overlaps(b) for b in bars)
