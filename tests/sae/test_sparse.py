"""monosemantic.sae.sparse: each sparse kernel against a slow eager version built from dense ops."""

import pytest
import torch

from monosemantic.sae.sparse import row_dots, row_offsets, scatter_rows, selected_preacts, sparse_decode


@pytest.fixture(autouse=True)
def _float64():
    """float64 so that agreement is exact up to summation order."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def random_selection(B: int, n: int, per_row: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-sorted (rows, cols) with per_row[b] distinct latents in row b (some rows may be empty)."""
    rows, cols = [], []
    for b, m in enumerate(per_row):
        rows += [b] * m
        cols += torch.randperm(n)[:m].tolist()
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def dense_from(values, rows, cols, B, n):
    z = torch.zeros(B, n, dtype=values.dtype)
    return z.index_put((rows, cols), values)


@pytest.fixture
def problem():
    B, n, d = 7, 20, 5
    per_row = [3, 0, 5, 1, 3, 0, 4]  # uneven, with empty rows (BatchTopK produces these)
    rows, cols = random_selection(B, n, per_row)
    return B, n, d, rows, cols


def test_row_offsets(problem):
    B, n, d, rows, cols = problem
    expected = torch.tensor([0, 3, 3, 8, 9, 12, 12])
    assert torch.equal(row_offsets(rows, B), expected)


def test_sparse_decode_matches_dense_matmul_and_its_gradients(problem):
    B, n, d, rows, cols = problem
    values = torch.randn(len(rows), requires_grad=True)
    W = torch.randn(n, d, requires_grad=True)
    out = sparse_decode(values, rows, cols, W, B)
    v2, W2 = values.detach().clone().requires_grad_(), W.detach().clone().requires_grad_()
    ref = dense_from(v2, rows, cols, B, n) @ W2
    torch.testing.assert_close(out, ref)
    g = torch.randn(B, d)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(values.grad, v2.grad)
    torch.testing.assert_close(W.grad, W2.grad)


def test_row_dots(problem):
    B, n, d, rows, cols = problem
    x, Wr = torch.randn(B, d), torch.randn(n, d)
    expected = torch.stack([x[r] @ Wr[c] for r, c in zip(rows.tolist(), cols.tolist())])
    torch.testing.assert_close(row_dots(x, Wr, rows, cols), expected)


def test_scatter_rows(problem):
    B, n, d, rows, cols = problem
    x, coef = torch.randn(B, d), torch.randn(len(rows))
    expected = torch.zeros(n, d)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        expected[c] += coef[i] * x[r]
    torch.testing.assert_close(scatter_rows(x, coef, rows, cols, n), expected)


@pytest.mark.parametrize("with_b_dec", [True, False])
@pytest.mark.parametrize("given_values", [True, False])
def test_selected_preacts_forward_and_backward_match_dense_autograd(problem, with_b_dec, given_values):
    B, n, d, rows, cols = problem
    x = torch.randn(B, d, requires_grad=True)
    W_enc = torch.randn(d, n, requires_grad=True)
    b_enc = torch.randn(n, requires_grad=True)
    b_dec = torch.randn(d, requires_grad=True) if with_b_dec else None
    leaves = [x, W_enc, b_enc] + ([b_dec] if with_b_dec else [])

    ref_pre = ((x - b_dec) if with_b_dec else x) @ W_enc + b_enc  # dense [B, n]
    ref = ref_pre[rows, cols]
    values = ref.detach().clone() if given_values else None
    out = selected_preacts(x, W_enc, b_enc, b_dec, rows, cols, values)
    torch.testing.assert_close(out, ref)

    g = torch.randn(len(rows))
    expected = torch.autograd.grad(ref, leaves, g)
    got = torch.autograd.grad(out, leaves, g)
    for name, a, b in zip(["x", "W_enc", "b_enc", "b_dec"], got, expected):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_selected_preacts_uses_the_given_values_verbatim(problem):
    """The fast path passes the matmul's values; they must come back unchanged (no recompute)."""
    B, n, d, rows, cols = problem
    x, W_enc, b_enc = torch.randn(B, d), torch.randn(d, n, requires_grad=True), torch.randn(n)
    values = torch.randn(len(rows))
    out = selected_preacts(x, W_enc, b_enc, None, rows, cols, values)
    assert torch.equal(out.detach(), values)
    assert out.data_ptr() != values.data_ptr()  # a copy: later in-place use cannot alias the input
