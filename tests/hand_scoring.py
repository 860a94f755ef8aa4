"""A by-hand reference for the experiments' per-item scores: one item at a time, an edit applied by a
forward hook registered here directly on a module of the model (no monosemantic hooks, positions or
interventions), greedy decoding by rerunning the whole sequence token by token."""

import numpy as np
import torch


def hook_on(module, edit):
    """Register `edit(hidden [1, T, d]) -> hidden` on `module`'s output (a tensor or a tuple's first)."""

    def fn(_module, _args, out):
        if isinstance(out, tuple):
            return (edit(out[0]), *out[1:])
        return edit(out)

    return module.register_forward_hook(fn)


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"] if text else []


@torch.no_grad()
def item_scores(model, tok, item, module=None, edit=None, clean_lp=None):
    """(scores dict, target log-probs [len(target), vocab]) of one task item, with `edit` on `module`."""
    prompt = tok(item.prompt)["input_ids"]  # BOS + the prompt's tokens
    target, contrast = ids_of(tok, item.target), ids_of(tok, item.contrast)
    handle = hook_on(module, edit) if edit is not None else None
    try:
        logits = model(input_ids=torch.tensor([prompt + target])).logits[0].float()
        lp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(target)], -1)
        seq = list(prompt)
        for _ in range(max(len(target), len(contrast))):
            nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == tok.eos_token_id:
                break
    finally:
        if handle is not None:
            handle.remove()
    answer = tok.decode(seq[len(prompt) :], skip_special_tokens=True)
    t = torch.tensor(target)
    scores = {
        "greedy": float(answer.startswith(item.target)),
        "contrast": float(answer.startswith(item.contrast)) if item.contrast else np.nan,
        "next_token": (lp.argmax(-1) == t).float().mean().item(),
        "ce": -lp.gather(1, t[:, None]).mean().item(),
        "kl": 0.0 if clean_lp is None else (clean_lp.exp() * (clean_lp - lp)).sum(-1).mean().item(),
        "logit_diff": np.nan,
    }
    differ = [k for k, (a, b) in enumerate(zip(target, contrast)) if a != b]
    if differ:
        k = differ[0]
        scores["logit_diff"] = (lp[k, target[k]] - lp[k, contrast[k]]).item()
    return scores, lp


def task_scores(model, tok, items, module=None, edit_for=None, clean_lps=None):
    """{metric: [n]} over items; `edit_for(i)` gives item i's edit (None: the clean model)."""
    rows, lps = [], []
    for i, item in enumerate(items):
        edit = edit_for(i) if edit_for is not None else None
        s, lp = item_scores(model, tok, item, module, edit, None if clean_lps is None else clean_lps[i])
        rows.append(s)
        lps.append(lp)
    return {m: np.array([r[m] for r in rows]) for m in rows[0]}, lps


def assert_scores_match(scores, expected, rtol=1e-4, atol=1e-5):
    """A `Scores` against `task_scores`' dict, metric by metric (NaN where expected NaN)."""
    for metric, want in expected.items():
        np.testing.assert_allclose(getattr(scores, metric), want, rtol=rtol, atol=atol, err_msg=metric)
