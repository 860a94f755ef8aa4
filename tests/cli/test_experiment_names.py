"""Experiment result files are named after what they hold (an ablation by label '=' wrote
ablate_u3d_equality_mean.json)."""

from monosemantic.cli.experiments import ablation_name, spelled


def test_ablation_results_are_named_after_the_mode_the_features_and_the_task():
    assert ablation_name("mean", "equality", "=", None) == "ablate_mean_label-equals-sign_equality"
    assert ablation_name("zero", "addition", None, [12, 345]) == "ablate_zero_features-12-345_addition"
    assert spelled("≈ French") == "almost-equal-to-space-French"
    assert spelled("my_tasks.jsonl") == "my_tasks.jsonl"
