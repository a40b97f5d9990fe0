//! Benchmark `store`: durable saves, burst throughput, open time, RSS and disk use.
