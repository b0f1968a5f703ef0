"""Compiled linear algebra of the ``ridge`` probe: the eigendecomposition and each split's solve.

Both run without Python's interpreter lock, so the probe's worker threads
run side by side.

- :func:`symmetric_eigh` calls the LAPACK routine of SciPy's ``eigh``
  (``?syevd``) and gives the same bits. SciPy's own wrapper holds the lock
  for the whole call (about 0.09 s for a 1024 × 1024 matrix here), which
  stalled the other workers.
- :func:`solve_woodbury` runs the conjugate-gradient solve of one split. Its
  products multiply the split's 500 held-out rows with one vector per task
  and penalty that is not solved yet (13 per task at first).
  OpenBLAS repacks the 2 MB matrix on every such call and took about 0.21 ms
  per product here. :func:`rows_dot` computes four rows against four vectors
  per pass (with two- and one-vector passes for the rest), and takes about
  0.09 ms.
- :func:`matrix_product` rotates a task's rows into the eigenbasis with the
  same kernel, a tile of rows at a time.

"Here" is one core of an AMD EPYC (Zen 5), where OpenBLAS runs its AVX2
kernels and numba's LLVM emits AVX-512.

The functions are compiled by numba on first use and cached next to this file.
"""

import numpy as np

from ..errors import import_optional

numba = import_optional("numba", "fitting ridge probes")

FASTMATH = {"reassoc", "contract"}
"""Let LLVM reorder sums into vector lanes and fuse multiply-adds, while NaN and infinity keep their meaning."""


@numba.njit(cache=True, nogil=True)
def symmetric_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the ascending eigenvalues and the eigenvectors (as columns) of a symmetric matrix."""
    return np.linalg.eigh(matrix)


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def rows_dot(rows: np.ndarray, vectors: np.ndarray, out: np.ndarray) -> None:  # noqa: C901, PLR0915 (unrolled)
    """Write ``out[c, r] = rows[r] · vectors[c]``, that is ``out = vectors @ rows.T``.

    Args:
        rows: ``(row_count, length)``, C-contiguous float32.
        vectors: ``(vector_count, length)``, C-contiguous float32.
        out: ``(vector_count, row_count)`` float32, overwritten.
    """
    row_count, length = rows.shape
    vector_count = vectors.shape[0]
    full_rows = row_count - row_count % 4
    for r in range(0, full_rows, 4):
        c = 0
        # Sixteen sums stay in registers: each pass loads four row and four vector elements.
        while c + 4 <= vector_count:
            s00 = s01 = s02 = s03 = np.float32(0.0)
            s10 = s11 = s12 = s13 = np.float32(0.0)
            s20 = s21 = s22 = s23 = np.float32(0.0)
            s30 = s31 = s32 = s33 = np.float32(0.0)
            for i in range(length):
                a0 = rows[r, i]
                a1 = rows[r + 1, i]
                a2 = rows[r + 2, i]
                a3 = rows[r + 3, i]
                b0 = vectors[c, i]
                b1 = vectors[c + 1, i]
                b2 = vectors[c + 2, i]
                b3 = vectors[c + 3, i]
                s00 += a0 * b0
                s01 += a1 * b0
                s02 += a2 * b0
                s03 += a3 * b0
                s10 += a0 * b1
                s11 += a1 * b1
                s12 += a2 * b1
                s13 += a3 * b1
                s20 += a0 * b2
                s21 += a1 * b2
                s22 += a2 * b2
                s23 += a3 * b2
                s30 += a0 * b3
                s31 += a1 * b3
                s32 += a2 * b3
                s33 += a3 * b3
            out[c, r] = s00
            out[c, r + 1] = s01
            out[c, r + 2] = s02
            out[c, r + 3] = s03
            out[c + 1, r] = s10
            out[c + 1, r + 1] = s11
            out[c + 1, r + 2] = s12
            out[c + 1, r + 3] = s13
            out[c + 2, r] = s20
            out[c + 2, r + 1] = s21
            out[c + 2, r + 2] = s22
            out[c + 2, r + 3] = s23
            out[c + 3, r] = s30
            out[c + 3, r + 1] = s31
            out[c + 3, r + 2] = s32
            out[c + 3, r + 3] = s33
            c += 4
        if c + 2 <= vector_count:
            s00 = s01 = s02 = s03 = np.float32(0.0)
            s10 = s11 = s12 = s13 = np.float32(0.0)
            for i in range(length):
                a0 = rows[r, i]
                a1 = rows[r + 1, i]
                a2 = rows[r + 2, i]
                a3 = rows[r + 3, i]
                b0 = vectors[c, i]
                b1 = vectors[c + 1, i]
                s00 += a0 * b0
                s01 += a1 * b0
                s02 += a2 * b0
                s03 += a3 * b0
                s10 += a0 * b1
                s11 += a1 * b1
                s12 += a2 * b1
                s13 += a3 * b1
            out[c, r] = s00
            out[c, r + 1] = s01
            out[c, r + 2] = s02
            out[c, r + 3] = s03
            out[c + 1, r] = s10
            out[c + 1, r + 1] = s11
            out[c + 1, r + 2] = s12
            out[c + 1, r + 3] = s13
            c += 2
        while c < vector_count:
            t0 = t1 = t2 = t3 = np.float32(0.0)
            for i in range(length):
                b0 = vectors[c, i]
                t0 += rows[r, i] * b0
                t1 += rows[r + 1, i] * b0
                t2 += rows[r + 2, i] * b0
                t3 += rows[r + 3, i] * b0
            out[c, r] = t0
            out[c, r + 1] = t1
            out[c, r + 2] = t2
            out[c, r + 3] = t3
            c += 1
    for r in range(full_rows, row_count):
        for c in range(vector_count):
            total = np.float32(0.0)
            for i in range(length):
                total += rows[r, i] * vectors[c, i]
            out[c, r] = total


@numba.njit(cache=True, nogil=True)
def solve_woodbury(  # noqa: PLR0913 (one argument per array and setting, as numba needs them)
    inputs: np.ndarray,
    inputs_transposed: np.ndarray,
    inverse_diagonal: np.ndarray,
    right_side: np.ndarray,
    tolerance: float,
    max_iterations: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Solve ``(I - ZT D⁻¹ ZTᵀ) x = b`` by conjugate gradients, one system per row of ``b``.

    Each system has its own diagonal ``D``, and all share ``ZT``. Vectors
    are rows, so ``x`` and ``b`` are ``(systems, test_size)``.

    Args:
        inputs: ``ZT``, ``(test_size, dim)``, C-contiguous float32.
        inputs_transposed: ``ZTᵀ``, ``(dim, test_size)``, C-contiguous.
        inverse_diagonal: ``D⁻¹`` per system, ``(systems, dim)``.
        right_side: ``b``, ``(systems, test_size)``.
        tolerance: Relative residual norm at which a system counts as solved.
        max_iterations: Iterations after which the solve stops regardless.
            A system also stops early when its curvature is not positive,
            and its residual then stays above the tolerance.

    Returns:
        The solutions ``x``, their projections ``ZTᵀ x`` as rows
        ``(systems, dim)``, the residuals ``b - (I - ZT D⁻¹ ZTᵀ) x`` and the
        largest relative residual norm.
    """
    system_count, size = right_side.shape
    dim = inputs_transposed.shape[0]
    solution = np.zeros((system_count, size), dtype=np.float32)
    projected_solution = np.zeros((system_count, dim), dtype=np.float32)
    residual = right_side.copy()
    residual_norm = np.zeros(system_count)
    target_norm = np.zeros(system_count)
    for system in range(system_count):
        for i in range(size):
            residual_norm[system] += np.float64(residual[system, i]) ** 2
        target_norm[system] = residual_norm[system] * tolerance * tolerance

    # Solved systems leave the products, which cost in proportion to the systems still in them.
    # Row j of the work arrays belongs to system active[j].
    active = np.flatnonzero(residual_norm > target_norm)
    direction = right_side[active].copy()
    active_inverse_diagonal = inverse_diagonal[active].copy()
    for _ in range(max_iterations):
        count = len(active)
        if count == 0:
            break
        # product = direction - (ZT D⁻¹ ZTᵀ direction), with ZTᵀ direction kept for the projection.
        projected = np.empty((count, dim), dtype=np.float32)
        rows_dot(inputs_transposed, direction, projected)
        scaled = projected * active_inverse_diagonal
        product = np.empty((count, size), dtype=np.float32)
        rows_dot(inputs, scaled, product)
        keep = np.ones(count, dtype=np.bool_)
        for j in range(count):
            system = active[j]
            curvature = 0.0
            for i in range(size):
                product[j, i] = direction[j, i] - product[j, i]
                curvature += np.float64(direction[j, i]) * product[j, i]
            step = np.float32(residual_norm[system] / curvature) if curvature > 0.0 else np.float32(0.0)
            new_norm = 0.0
            for i in range(size):
                solution[system, i] += step * direction[j, i]
                residual[system, i] -= step * product[j, i]
                new_norm += np.float64(residual[system, i]) ** 2
            for k in range(dim):
                projected_solution[system, k] += step * projected[j, k]
            ratio = np.float32(new_norm / residual_norm[system]) if residual_norm[system] > 0.0 else np.float32(0.0)
            for i in range(size):
                direction[j, i] = residual[system, i] + ratio * direction[j, i]
            residual_norm[system] = new_norm
            keep[j] = new_norm > target_norm[system] and curvature > 0.0
        if not np.all(keep):
            active = active[keep]
            direction = direction[keep].copy()
            active_inverse_diagonal = active_inverse_diagonal[keep].copy()

    worst = 0.0
    for system in range(system_count):
        if target_norm[system] > 0.0:
            worst = max(worst, np.sqrt(residual_norm[system] / target_norm[system]) * tolerance)
    return solution, projected_solution, residual, worst


ROWS_PER_TILE = 64
"""Rows of the left matrix per call in :func:`matrix_product`: 256 KB of 1024-wide rows, which stay in a core's L2 cache."""


def matrix_product(left: np.ndarray, right_transposed: np.ndarray, out: np.ndarray) -> None:
    """Write ``out = left @ right_transposed.T`` tile by tile of ``left``'s rows.

    For the rotation of a task's rows into the eigenbasis (5000 × 1024 times
    1024 × 1024) this took 0.05 s on one core here, against 0.085 s with
    OpenBLAS's AVX2 kernels.

    Args:
        left: ``(rows, length)``, C-contiguous float32.
        right_transposed: ``(columns, length)``, C-contiguous float32.
        out: ``(rows, columns)`` float32 with contiguous rows, for example
            the first columns of a wider array; overwritten.
    """
    left = np.ascontiguousarray(left)
    right_transposed = np.ascontiguousarray(right_transposed)
    for start in range(0, len(left), ROWS_PER_TILE):
        stop = start + ROWS_PER_TILE
        rows_dot(right_transposed, left[start:stop], out[start:stop])


def load() -> None:
    """Compile the functions, or load them from numba's cache, and load the LAPACK library they call.

    Run this before limiting BLAS threads: a library loaded afterwards is not limited.
    """
    symmetric_eigh(np.eye(2, dtype=np.float32))
    inputs = np.ones((5, 3), dtype=np.float32)
    right_side = np.ones((5, 5), dtype=np.float32)
    rows_dot(inputs, inputs, right_side)
    matrix_product(inputs, inputs[:2], np.ones((5, 3), dtype=np.float32)[:, :2])
    solve_woodbury(
        inputs, np.ascontiguousarray(inputs.T), np.full((5, 3), 0.1, dtype=np.float32),
        right_side, 1e-5, 10,
    )
