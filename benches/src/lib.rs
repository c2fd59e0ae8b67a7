//! Criterion benchmarks of wrn's stages; the benchmarks live in `benches/benches/`, one file per stage.
//! Run them with `make bench`. Throughput is reported in images per second; compare figures only as
//! ratios against a baseline measured in the same run, since machines differ.
