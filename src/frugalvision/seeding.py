"""The one seed-derivation function of the library (stable across processes, machines and Python versions)."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(*parts: object) -> int:
    """Derive a 63-bit seed from any sequence of values (integers, strings, ...).

    The parts are joined by their ``str()`` (so ``derive_seed(3, "a") == derive_seed("3", "a")``) and hashed with
    SHA-256; unlike ``hash()``, the result never changes between processes.

    Args:
        *parts: the base seed and any keys (a stage name, a rank, a step, a domain name...).

    Returns:
        A non-negative integer below ``2**63`` (use ``% 2**32`` for NumPy's legacy seeding).
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
