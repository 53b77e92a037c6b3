"""Test-session settings: one torch thread per worker.

With `pytest -n 2` on a 2-core machine, two threads per worker oversubscribe the CPU and tiny-model
convolutions run many times slower; one thread each is both faster and deterministic.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
