"""How much memory a run may take: what preprocessing needs per extracted row, and what the machine has."""
import os

from walsmf.errors import DataError

# DuckDB spills past this share of the memory: most of it is left to the preprocessing that follows.
DUCKDB_MEMORY_SHARE = 0.3
# Memory the in-process preprocessing of one extracted row takes at its peak, with a margin (ids as
# categoricals, two CSRs, the sorts' temporaries; benchmarks/bench_scale.py measures it): what
# check_fits_in_memory expects a run to need.
PREPROCESS_BYTES_PER_ROW = 350


def check_fits_in_memory(n_rows: int) -> None:
    """Stop before preprocessing ``n_rows`` in this process would exhaust the memory (and be killed)."""
    check_available(n_rows * PREPROCESS_BYTES_PER_ROW, "{:,} extracted rows".format(n_rows),
                    "to preprocess in one process", "run the Beam pipeline instead (--runner DataflowRunner on Google "
                    "Cloud; --runner DirectRunner here, slowly)")


def check_available(needed: float, what: str, purpose: str, advice: str) -> None:
    """Refuse, before any work, what would take more than the memory available (the kernel would kill it, or
    the machine would swap): "``what`` would take about X GB ``purpose`` and this machine has Y GB available:
    ``advice``"."""
    available = available_memory_bytes()
    if needed > available:
        raise DataError("{} would take about {:.1f} GB {} and this machine has {:.1f} GB available: {}".format(
            what, needed / 1e9, purpose, available / 1e9, advice))


def available_memory_bytes() -> int:
    """Memory available to this process now (Linux's MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return total_memory_mb() * 2 ** 20


def total_memory_mb() -> int:
    """This machine's physical memory in MB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20
