"""Tests of monosemantic.data.activations: loading activation files (.npy, .safetensors) with validation
and clear errors, and the exactly resumable shuffled batches of `TensorBatches`."""

import numpy as np
import pytest
import safetensors.torch
import torch

from monosemantic.data.activations import ActivationDataError, TensorBatches, check_finite, load_activation_file


def random_acts(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# ---- loading ---------------------------------------------------------------------------------


def test_npy_loads_exactly(tmp_path):
    x = random_acts(50, 6)
    np.save(tmp_path / "a.npy", x)
    got = load_activation_file(tmp_path / "a.npy")
    assert got.dtype == torch.float32
    assert np.array_equal(got.numpy(), x)


def test_npy_float16_keeps_its_values(tmp_path):
    x = random_acts(20, 4, dtype=np.float16)
    np.save(tmp_path / "a.npy", x)
    got = load_activation_file(str(tmp_path / "a.npy"))
    assert got.dtype == torch.float16
    assert np.array_equal(got.numpy(), x)


def test_leading_dimensions_are_flattened(tmp_path):
    x = random_acts(3, 5, 4)  # [batch, seq, d]
    np.save(tmp_path / "a.npy", x)
    assert np.array_equal(load_activation_file(tmp_path / "a.npy").numpy(), x.reshape(15, 4))
    safetensors.torch.save_file({"acts": torch.from_numpy(x)}, tmp_path / "a.safetensors")
    assert np.array_equal(load_activation_file(tmp_path / "a.safetensors").numpy(), x.reshape(15, 4))


def test_safetensors_single_tensor_needs_no_key(tmp_path):
    x = torch.from_numpy(random_acts(10, 3)).to(torch.bfloat16)
    safetensors.torch.save_file({"whatever": x}, tmp_path / "a.safetensors")
    got = load_activation_file(tmp_path / "a.safetensors")
    assert got.dtype == torch.bfloat16 and torch.equal(got, x)


def test_safetensors_several_tensors_need_a_key(tmp_path):
    a, b = torch.from_numpy(random_acts(10, 3)), torch.from_numpy(random_acts(7, 3)) + 1
    path = tmp_path / "a.safetensors"
    safetensors.torch.save_file({"layer1": a, "layer2": b}, path)
    assert torch.equal(load_activation_file(path, key="layer2"), b)
    assert torch.equal(load_activation_file(path, "layer1"), a)
    with pytest.raises(ActivationDataError, match=r"holds tensors \['layer1', 'layer2'\]; name one with --key"):
        load_activation_file(path)
    with pytest.raises(ActivationDataError, match=r"no tensor 'layer3'; it holds \['layer1', 'layer2'\]"):
        load_activation_file(path, key="layer3")


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_values_name_the_first_bad_row(tmp_path, suffix, bad, kind):
    x = random_acts(40, 5)
    x[17, 2] = bad
    x[30, 0] = np.nan
    path = tmp_path / f"a{suffix}"
    np.save(path, x) if suffix == ".npy" else safetensors.torch.save_file({"x": torch.from_numpy(x)}, path)
    with pytest.raises(ActivationDataError, match=rf"a{suffix}: row 17 contains {kind} \(2 bad rows"):
        load_activation_file(path)


def test_non_finite_row_index_counts_across_chunks(tmp_path):
    # the file is checked in chunks of 2^24 values (here 2048 rows); the row must be global
    x = np.zeros((2100, 8192), dtype=np.float16)
    x[2070, 5] = np.inf
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(ActivationDataError, match=r"row 2070 contains inf"):
        load_activation_file(tmp_path / "big.npy")


def test_check_finite_adds_the_row_offset():
    x = torch.zeros(10, 3)
    x[4, 1] = float("nan")
    with pytest.raises(ActivationDataError, match=r"^src: row 1004 contains NaN \(1 bad rows"):
        check_finite(x, "src", row_offset=1000)
    check_finite(torch.zeros(3, 3), "src")  # finite: no error


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_non_float_dtypes_are_refused_naming_the_dtype(tmp_path, dtype):
    np.save(tmp_path / "a.npy", np.ones((4, 3), dtype=dtype))
    name = str(torch.from_numpy(np.ones(1, dtype=dtype)).dtype)
    with pytest.raises(ActivationDataError, match=rf"expected floating-point activations, got dtype {name}"):
        load_activation_file(tmp_path / "a.npy")


def test_one_dimensional_array_is_refused_naming_the_shape(tmp_path):
    np.save(tmp_path / "a.npy", random_acts(7))
    with pytest.raises(ActivationDataError, match=r"expected activations of shape \[N, d\].*got \[7\]"):
        load_activation_file(tmp_path / "a.npy")


def test_empty_array_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(ActivationDataError, match=r"holds no activation vectors \(shape \[0, 4\]\)"):
        load_activation_file(tmp_path / "a.npy")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ActivationDataError, match=r"nothere\.npy: no such file"):
        load_activation_file(tmp_path / "nothere.npy")


@pytest.mark.parametrize("name, shown", [("a.csv", "'.csv'"), ("acts", "'no suffix'"), ("a.NPY", "'.NPY'")])
def test_wrong_suffix_is_refused_naming_it(tmp_path, name, shown):
    (tmp_path / name).write_bytes(b"1,2,3\n")
    with pytest.raises(ActivationDataError, match=rf"expected a \.npy or \.safetensors file, got {shown}"):
        load_activation_file(tmp_path / name)


class _Payload:
    """Unpickling this object would create a file: the proof that pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickled_npy_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    array = np.empty((2, 2), dtype=object)
    array[0, 0] = _Payload(marker)
    np.save(tmp_path / "a.npy", array, allow_pickle=True)
    with pytest.raises(ActivationDataError, match=r"a\.npy: not a plain numeric \.npy array"):
        load_activation_file(tmp_path / "a.npy")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage that is not a header", b"\x10\x00\x00\x00\x00\x00\x00\x00{"])
def test_corrupt_safetensors_is_refused(tmp_path, content):
    (tmp_path / "a.safetensors").write_bytes(content)
    with pytest.raises(ActivationDataError, match=r"a\.safetensors: not a readable safetensors file"):
        load_activation_file(tmp_path / "a.safetensors")


@pytest.mark.parametrize("cut", ["header", "data"])
def test_truncated_npy_is_refused(tmp_path, cut):
    np.save(tmp_path / "a.npy", random_acts(100, 4))
    full = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(full[:50] if cut == "header" else full[: len(full) // 2])
    with pytest.raises(ActivationDataError, match=r"a\.npy: not a plain numeric \.npy array"):
        load_activation_file(tmp_path / "a.npy")


def test_empty_npy_file_is_refused(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    with pytest.raises(ActivationDataError, match=r"a\.npy"):
        load_activation_file(tmp_path / "a.npy")


def test_big_endian_npy_loads_or_is_refused_clearly(tmp_path):
    x = random_acts(5, 3)
    np.save(tmp_path / "a.npy", x.astype(">f4"))
    try:
        got = load_activation_file(tmp_path / "a.npy")
    except ActivationDataError as e:
        assert ">f4" in str(e) or "byte order" in str(e)
    else:
        assert np.array_equal(got.numpy(), x)


# ---- TensorBatches ---------------------------------------------------------------------------


def row_ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0].long().tolist()


def numbered_rows(n: int, d: int = 3) -> torch.Tensor:
    """Row i holds the value i everywhere, so a batch says which rows it holds."""
    return torch.arange(n, dtype=torch.float64)[:, None].expand(n, d).contiguous()


def take(batches: TensorBatches, n: int) -> list[torch.Tensor]:
    return [next(batches) for _ in range(n)]


def test_every_row_appears_exactly_once_per_epoch():
    data = numbered_rows(40)
    batches = TensorBatches(data, 8, seed=3)
    assert batches.batches_per_epoch == 5
    for _ in range(3):
        seen = sorted(i for b in take(batches, 5) for i in row_ids(b))
        assert seen == list(range(40))


def test_last_partial_batch_is_dropped_and_no_row_repeats():
    batches = TensorBatches(numbered_rows(43), 8, seed=0)
    epoch = [i for b in take(batches, 5) for i in row_ids(b)]
    assert len(epoch) == 40 and len(set(epoch)) == 40
    assert batches.state_dict() == {"epoch": 1, "index": 0}


def test_batches_have_the_requested_shape_and_dtype():
    data = numbered_rows(20, d=5).half()
    batch = next(TensorBatches(data, 4))
    assert batch.shape == (4, 5) and batch.dtype == torch.float32
    assert next(TensorBatches(data, 4, dtype=torch.float64)).dtype == torch.float64


def test_epochs_differ_but_a_seed_repeats_the_sequence():
    data = numbered_rows(64)
    a = [row_ids(b) for b in take(TensorBatches(data, 16, seed=5), 12)]
    b = [row_ids(b) for b in take(TensorBatches(data, 16, seed=5), 12)]
    c = [row_ids(b) for b in take(TensorBatches(data, 16, seed=6), 12)]
    assert a == b
    assert a != c
    epochs = [sum(a[i : i + 4], []) for i in range(0, 12, 4)]
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert epochs[0] != list(range(64))  # actually shuffled


def test_shuffle_false_reads_rows_in_order():
    got = [i for b in take(TensorBatches(numbered_rows(12), 4, shuffle=False), 4) for i in row_ids(b)]
    assert got == list(range(12)) + [0, 1, 2, 3]


@pytest.mark.parametrize("consumed", [0, 3, 5, 7, 11])
def test_state_dict_resumes_the_exact_sequence(consumed):
    data = numbered_rows(50)
    original = TensorBatches(data, 10, seed=2)
    take(original, consumed)
    state = original.state_dict()
    expected = take(original, 12)  # crosses at least two epoch boundaries (5 batches per epoch)

    resumed = TensorBatches(data, 10, seed=2)
    resumed.load_state_dict(dict(state))
    got = take(resumed, 12)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_fewer_rows_than_one_batch_is_an_error():
    with pytest.raises(ActivationDataError, match=r"only 10 activation vectors, fewer than one batch of 16"):
        TensorBatches(torch.zeros(10, 3), 16)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        TensorBatches(torch.zeros(10, 3), 0)
