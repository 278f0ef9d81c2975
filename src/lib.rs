//! wisp: hunt and detect attacks on Microsoft Entra ID workload identities over a Parquet lake.
//!
//! Data flows one way: raw exports → [`ingest`] → [`lake`] (Parquet, `day=` partitions) →
//! [`session`] (tables + UDFs + watchlists) → [`rules`] run by [`detect`], SQL, hunts → [`output`].
//! [`time`] is shared by all of them.

pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod demo;
pub mod detect;
pub mod gen;
pub mod ingest;
pub mod lake;
pub mod memory;
pub mod output;
pub mod pivot;
pub mod query;
pub mod rollups;
pub mod rules;
pub mod session;
pub mod time;
pub mod version_days;
