"""embedding (a row gather) against torch.nn.functional.embedding; the bad-id contract."""

import pytest
import torch
import torch.nn.functional as F

from kernel_tolerances import DTYPE_IDS, DTYPES, assert_untouched, channel_slice_buffer, rand
from netdsl.kernels import _host
from netdsl.kernels import embedding as embedding_module
from netdsl.kernels.embedding import embedding


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("ids_shape,D", [((3, 7), 37), ((5,), 16), ((2, 3, 4), 1), ((1, 1), 40)])
def test_matches_torch(ids_shape, D, ids_dtype, dtype):
    w = rand(50, D, dtype=dtype)
    ids = torch.randint(0, 50, ids_shape, dtype=ids_dtype)
    ids.view(-1)[0] = 49                                      # the last row
    y = embedding(ids, w)
    assert y.dtype == dtype and y.shape == (*ids_shape, D)
    assert torch.equal(y, F.embedding(ids.long(), w))          # a copy: bit exact


def test_strided_weight_and_output_slice():
    big = rand(30, 50)
    w = big[:, 4:40]                                          # row stride 50
    ids = torch.randint(0, 30, (4, 6))
    buf, out = channel_slice_buffer((4, 6, 36), 2, 38, torch.float32)
    assert embedding(ids, w, out=out) is out
    assert torch.equal(out, F.embedding(ids, w))
    assert_untouched(buf, 2, 38)


def test_bad_ids_are_never_read_give_zero_rows_and_raise_with_their_count():
    w = rand(10, 20)
    ids = torch.tensor([[0, -1, 9], [10, 3, 2**31 - 1]], dtype=torch.int32)
    with pytest.raises(_host.KernelError, match="3 id"):
        embedding(ids, w)
    # without the check: zeros for bad ids, the rest as torch
    y = embedding(ids, w, check_ids=False)
    good = (ids >= 0) & (ids < 10)
    assert (y[~good] == 0).all()
    assert torch.equal(y[good], w[ids[good].long()])
    huge = torch.tensor([5, 2**40, -2**40], dtype=torch.int64)   # int64 ids beyond int32
    counter = torch.zeros(1, dtype=torch.int32)
    y = embedding(huge, w, check_ids=False, bad_ids=counter)
    assert int(counter) == 2 and (y[1:] == 0).all() and torch.equal(y[0], w[5])
    # a caller-owned counter accumulates over launches; with check_ids it is the one checked
    embedding(torch.tensor([1, 11]), w, check_ids=False, bad_ids=counter)
    assert int(counter) == 3
    with pytest.raises(_host.KernelError, match="3 id"):
        embedding(torch.tensor([1, 2]), w, bad_ids=counter)


def test_empty_vocabulary_reads_nothing():
    y = embedding(torch.tensor([0, 1]), torch.empty(0, 8), check_ids=False)
    assert (y == 0).all() and y.shape == (2, 8)
    assert embedding(torch.empty(0, dtype=torch.int64), rand(4, 8)).shape == (0, 8)


def test_int64_offsets_compute_the_same():
    w, ids = rand(40, 24, dtype=torch.bfloat16), torch.randint(-3, 43, (3, 11))
    counter = torch.zeros(1, dtype=torch.int32)
    out, launch = embedding_module._plan_embedding(ids, w, None, counter, True)
    launch.constexprs["USE_INT64"] = True
    _host.run(launch)
    good = (ids >= 0) & (ids < 40)
    assert int(counter) == int((~good).sum())
    assert torch.equal(out[good], w[ids[good]]) and (out[~good] == 0).all()


def test_argument_errors():
    w, ids = rand(10, 8), torch.tensor([1, 2])
    bad = [
        lambda: embedding(ids.float(), w),
        lambda: embedding(torch.tensor([[1, 2], [3, 4]]).t(), w),          # ids not contiguous
        lambda: embedding(ids, w.t()),                                       # channel stride
        lambda: embedding(ids, rand(10)),                                    # not [V, D]
        lambda: embedding(ids, w.to(torch.int32)),
        lambda: embedding(ids, w, out=torch.empty(2, 9)),
        lambda: embedding(ids, w, bad_ids=torch.zeros(2, dtype=torch.int32)),
        lambda: embedding(ids, w, bad_ids=torch.zeros(1, dtype=torch.int64)),
    ]
    for fn in bad:
        with pytest.raises(_host.KernelError):
            fn()


def test_specialization():
    spec = embedding_module.specialization((4, 128), torch.int64, 32000, 4096, torch.float16)
    assert spec["signature"]["ids_ptr"] == "*i64" and spec["signature"]["bad_ptr"] == "*i32"
    assert spec["constexprs"]["COUNT_BAD"] and spec["constexprs"]["BLOCK_D"] == embedding_module.MAX_BLOCK_D
    assert not embedding_module.specialization((7,), torch.int32, 100, 24, torch.float32,
                                               count_bad=False)["constexprs"]["COUNT_BAD"]
