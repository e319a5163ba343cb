"""The CPU eigendecomposition that spreads a batch over the cores (mhgd.methods.cpu_eigh)."""

import ctypes
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import torch

from mhgd.methods import cpu_eigh

needs_mkl = pytest.mark.skipif(
    cpu_eigh._single_threaded_setup() is None, reason="this torch has no MKL to set per thread"
)


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def symmetric_batch(n: int, size: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(n, size, 2 * size, generator=generator, dtype=dtype)
    return factor @ factor.mT


@needs_mkl
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_split_batch_gives_torch_eigh_s_eigenpairs(two_threads, dtype):
    matrices = symmetric_batch(9, 24, dtype)
    values, vectors = cpu_eigh.eigh(matrices)
    reference_values, reference_vectors = torch.linalg.eigh(matrices)
    assert any(t.name.startswith(cpu_eigh.THREAD_NAME) for t in threading.enumerate())
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(values, reference_values, rtol=tolerance, atol=tolerance)
    overlap = (vectors.mT @ reference_vectors).abs()  # the same vectors, up to sign
    identity = torch.eye(24, dtype=dtype).expand(9, -1, -1)
    torch.testing.assert_close(overlap, identity, rtol=0, atol=100 * tolerance)
    assert vectors.mT.is_contiguous()  # column-major, as LAPACK's output


@needs_mkl
def test_a_result_repeats_exactly(two_threads):
    matrices = symmetric_batch(16, 32, torch.float32, seed=1)
    first, second = cpu_eigh.eigh(matrices), cpu_eigh.eigh(matrices)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def _thread_counts() -> tuple[int, int]:
    library = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    return torch.get_num_threads(), library.MKL_Get_Max_Threads()


@needs_mkl
def test_workers_run_with_one_openmp_and_one_mkl_thread_and_the_caller_keeps_its_own(two_threads):
    cpu_eigh.eigh(symmetric_batch(4, 16, torch.float32))
    pool = cpu_eigh._WORKERS.pool(2, cpu_eigh._single_threaded_setup())
    assert [pool.submit(_thread_counts).result() for _ in range(4)] == [(1, 1)] * 4
    assert _thread_counts() == (2, 2)


def _eigenvalues_in_child(matrices: torch.Tensor, queue: multiprocessing.Queue) -> None:
    queue.put(cpu_eigh.eigh(matrices)[0].tolist())  # plain numbers: the child exits at once


@needs_mkl
def test_a_forked_child_builds_its_own_workers(two_threads):
    matrices = symmetric_batch(8, 20, torch.float64, seed=2)
    expected = cpu_eigh.eigh(matrices)[0]  # the parent's pool exists before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_eigenvalues_in_child, args=(matrices, queue))
    child.start()
    result = queue.get(timeout=300)  # the fork's copy of the pool has no threads: it would hang
    child.join(timeout=60)
    torch.testing.assert_close(torch.tensor(result, dtype=torch.float64), expected)


@pytest.mark.parametrize(
    ("size", "requires_grad", "threads"),
    [(8, False, 2), (24, True, 2), (24, False, 1)],
    ids=["small", "differentiated", "one-thread"],
)
def test_what_it_does_not_split_is_torch_eigh_itself(size, requires_grad, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        matrices = symmetric_batch(6, size, torch.float64).requires_grad_(requires_grad)
        values, vectors = cpu_eigh.eigh(matrices)
        reference = torch.linalg.eigh(matrices)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(values, reference.eigenvalues)
    assert torch.equal(vectors, reference.eigenvectors)
    assert (values.grad_fn is not None) == requires_grad


@pytest.mark.parametrize(("given", "expected"), [(None, "20000"), ("7", "7")])
def test_importing_mhgd_shortens_openmp_spinning_unless_the_user_set_it(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    code = "import os, mhgd, torch; print(os.environ['GOMP_SPINCOUNT'])"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == expected
