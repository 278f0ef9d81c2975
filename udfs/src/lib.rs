//! IP, CIDR, allowlist-range, watchlist, ASN and geo SQL functions for Apache DataFusion.
//!
//! One entry point, [`Udfs::load`] then [`Udfs::register`], puts every function into any
//! [`FunctionRegistry`]: a wisp session, a plain `SessionContext`, a Ballista scheduler or executor.
//! This crate never depends on `wisp`.
//!
//! | function | result |
//! |---|---|
//! | `cidr_match(ip, cidr, …)` | true if `ip` is in any CIDR (IPv4, IPv6, `::ffff:` mapped) |
//! | `ip_in_range(ip, range)` | `range` is `a-b`, a CIDR or one address |
//! | `ip_in_any_range(ip, list)` | `list` is an array of ranges (or several range arguments) |
//! | `ip_compare(a, b)` | -1, 0, 1 |
//! | `in_watchlist(ip, name)` | membership in a named watchlist |
//! | `is_private_ip(ip)` | the 26 reserved ranges of Elastic's suspicious-source rule |
//! | `to_ip(s)` | normalized address text |
//! | `asn(ip)`, `asn_number(ip)`, `asn_org(ip)` | ASN database lookups |
//! | `geo(ip)` | City database lookup |
//! | `graph_path_template(uri)` | a Graph request URI as its action: `/v1.0/users/{id}/messages` |
//! | `key_hash(s)` | a stable 64-bit hash of a string (FNV-1a), for indexes keyed by long ids |
//! | `list_field(list, 'name')` | the named field of each struct in a list of structs, as a list |
//! | `list_where(list, 'name', value)` | the structs of a list whose named field equals a constant string |
//! | `last_by(value, ts, tiebreak)` (aggregate) | `value` of the row with the greatest `(ts, tiebreak)`, nulls greatest: `last_value(value ORDER BY ts, tiebreak)`, vectorized |

pub mod aggregates;
pub mod db;
pub mod functions;
pub mod graph;
pub mod hash;
pub mod ip;
pub mod lists;
pub mod ranges;
pub mod testdb;
pub mod watchlist;

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ScalarUDF;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use db::{AsnDb, AsnInfo, DbError, GeoDb, GeoInfo};
pub use ranges::{RangeError, RangeSet};
pub use watchlist::{Watchlist, WatchlistError};

/// Compiled watchlists by name.
pub type Watchlists = HashMap<String, RangeSet>;

/// What the functions need: database paths and watchlists.
#[derive(Debug, Clone, Default)]
pub struct UdfConfig {
    pub asn_db: Option<PathBuf>,
    pub geo_db: Option<PathBuf>,
    /// `(name, csv path)`; a later entry with the same name replaces an earlier one.
    pub watchlists: Vec<(String, PathBuf)>,
}

/// Loading the configuration failed (at session start, never mid-query).
#[derive(Debug, thiserror::Error)]
pub enum UdfError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Watchlist(#[from] WatchlistError),
    #[error("registering functions: {0}")]
    Register(#[from] datafusion::error::DataFusionError),
}

/// Loaded databases and watchlists, ready to register.
#[derive(Debug, Clone, Default)]
pub struct Udfs {
    pub asn: Option<Arc<AsnDb>>,
    pub geo: Option<Arc<GeoDb>>,
    pub watchlists: Vec<Watchlist>,
    compiled: Arc<Watchlists>,
}

impl Udfs {
    /// Opens the databases and compiles the watchlists; any missing or corrupt file is an error now.
    pub fn load(cfg: &UdfConfig) -> Result<Self, UdfError> {
        let asn = cfg.asn_db.as_ref().map(AsnDb::open).transpose()?.map(Arc::new);
        let geo = cfg.geo_db.as_ref().map(GeoDb::open).transpose()?.map(Arc::new);
        let mut lists: Vec<Watchlist> = Vec::new();
        for (name, path) in &cfg.watchlists {
            let w = watchlist::load(name, path)?;
            lists.retain(|l| l.name != w.name);
            lists.push(w);
        }
        Ok(Self::from_parts(asn, geo, lists))
    }

    pub fn from_parts(asn: Option<Arc<AsnDb>>, geo: Option<Arc<GeoDb>>, watchlists: Vec<Watchlist>) -> Self {
        let compiled = Arc::new(watchlists.iter().map(|w| (w.name.clone(), w.set.clone())).collect());
        Udfs { asn, geo, watchlists, compiled }
    }

    /// Every function, bound to this configuration.
    pub fn functions(&self) -> Vec<ScalarUDF> {
        functions::all(self.asn.clone(), self.geo.clone(), self.compiled.clone())
    }

    /// Every aggregate function (they need no configuration).
    pub fn aggregates(&self) -> Vec<datafusion::logical_expr::AggregateUDF> {
        aggregates::all()
    }

    /// Registers every function into `registry`.
    pub fn register(&self, registry: &mut dyn FunctionRegistry) -> Result<(), UdfError> {
        for f in self.functions() {
            registry.register_udf(Arc::new(f))?;
        }
        for f in self.aggregates() {
            registry.register_udaf(Arc::new(f))?;
        }
        Ok(())
    }
}

/// Registers every function with no databases and no watchlists.
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<(), UdfError> {
    Udfs::default().register(registry)
}
