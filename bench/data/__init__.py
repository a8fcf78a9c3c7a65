"""Small copies of the real outcome data the benchmarks use (see PROVENANCE.md here)."""
