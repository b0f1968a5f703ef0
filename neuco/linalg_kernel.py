"""Symmetric eigendecomposition that lets other threads run meanwhile.

The ``ridge`` probe decomposes one 1024 × 1024 Gram matrix per task on
several worker threads. SciPy's LAPACK wrappers hold Python's interpreter
lock for the whole call (about 0.09 s here), so the other workers stalled
at their next Python statement. numba calls the same LAPACK routine (SciPy's
``?syevd``) from compiled code that releases the lock, and gives the same
bits. The function is compiled on first use and cached next to this file.
"""

import numpy as np

from ..errors import import_optional

numba = import_optional("numba", "fitting ridge probes")


@numba.njit(cache=True, nogil=True)
def symmetric_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the ascending eigenvalues and the eigenvectors (as columns) of a symmetric matrix."""
    return np.linalg.eigh(matrix)


def load() -> None:
    """Compile the function, or load it from numba's cache, and load the LAPACK library it calls.

    Run this before limiting BLAS threads: a library loaded afterwards is not limited.
    """
    symmetric_eigh(np.eye(2, dtype=np.float32))
