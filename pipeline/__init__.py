"""CDR anonymisation pipeline: seal, tokenise, tier and retain communication detail records."""

import os

__version__ = "0.1.0"

# Memory that polars (its jemalloc) and Arrow free goes back to the system when it is freed,
# instead of staying counted in the process's resident memory as reusable pages: an ingest's
# peak then follows what it holds, not what it once held. Set before either library loads;
# an operator's own setting of either variable wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "muzzy_decay_ms:0")
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
# numpy serves small array steps here (fingerprints, bucket sorts), never linear algebra: its
# BLAS threads would only spin beside polars' own pool.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
