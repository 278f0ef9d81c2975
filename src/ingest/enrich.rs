//! Enrichment at ingest: ASN and geo of a row's source address.

use crate::lake::rows::CompactRow;
use crate::lake::Table;
use serde_json::Value;
use std::sync::Arc;
use wisp_udfs::db::{AsnCache, GeoCache};
use wisp_udfs::{AsnDb, GeoDb};

/// ASN and geo enrichment, done once at ingest, with per-run lookup caches.
pub(super) struct Enricher {
    pub(super) asn: Option<Arc<AsnDb>>,
    pub(super) geo: Option<Arc<GeoDb>>,
    asn_cache: AsnCache,
    geo_cache: GeoCache,
}

impl Enricher {
    pub(super) fn new(asn: Option<Arc<AsnDb>>, geo: Option<Arc<GeoDb>>) -> Self {
        Enricher { asn, geo, asn_cache: AsnCache::new(), geo_cache: GeoCache::new() }
    }

    /// The ASN database's record of an address (cached per run).
    pub(super) fn lookup_asn(&mut self, ip: std::net::IpAddr) -> Option<wisp_udfs::db::AsnInfo> {
        let db = self.asn.as_ref()?;
        if self.asn_cache.len() > 100_000 {
            self.asn_cache.clear();
        }
        db.lookup(ip, &mut self.asn_cache)
    }

    /// The geo database's record of an address (cached per run).
    pub(super) fn lookup_geo(&mut self, ip: std::net::IpAddr) -> Option<wisp_udfs::db::GeoInfo> {
        let db = self.geo.as_ref()?;
        if self.geo_cache.len() > 100_000 {
            self.geo_cache.clear();
        }
        db.lookup(ip, &mut self.geo_cache)
    }

    /// Fills `source_asn`/`source_as_org` from the ASN database, and `country`/`city` from the
    /// geo database when the log has none; a row of `Value`s or a compact row alike.
    pub(super) fn apply<R: EnrichRow + ?Sized>(&mut self, table: Table, row: &mut R) {
        let cols = EnrichCols::of(table);
        let (Some(ip_i), true) = (cols.ip, self.asn.is_some() || self.geo.is_some()) else {
            return;
        };
        let Some(ip) = row.text(ip_i).and_then(wisp_udfs::ip::parse_ip) else {
            return;
        };
        if let (Some(asn_i), Some(org_i)) = (cols.asn, cols.as_org) {
            if let Some(hit) = self.lookup_asn(ip) {
                row.put_int(asn_i, hit.number);
                row.put_text(org_i, hit.organization.as_deref());
            }
        }
        if let (Some(c_i), Some(city_i)) = (cols.country, cols.city) {
            if row.null(c_i) {
                if let Some(g) = self.lookup_geo(ip) {
                    row.put_text(c_i, g.country_iso.as_deref());
                    if row.null(city_i) {
                        row.put_text(city_i, g.city.as_deref());
                    }
                }
            }
        }
    }
}

/// What enrichment reads and writes of a row, by column index.
pub(super) trait EnrichRow {
    fn text(&self, i: usize) -> Option<&str>;
    fn null(&self, i: usize) -> bool;
    fn put_int(&mut self, i: usize, v: i64);
    /// Text, or null for `None`.
    fn put_text(&mut self, i: usize, v: Option<&str>);
}

impl EnrichRow for [Value] {
    fn text(&self, i: usize) -> Option<&str> {
        self[i].as_str()
    }
    fn null(&self, i: usize) -> bool {
        self[i].is_null()
    }
    fn put_int(&mut self, i: usize, v: i64) {
        self[i] = Value::from(v);
    }
    fn put_text(&mut self, i: usize, v: Option<&str>) {
        self[i] = v.map_or(Value::Null, |s| Value::String(s.to_string()));
    }
}

impl EnrichRow for CompactRow {
    fn text(&self, i: usize) -> Option<&str> {
        self.str(i)
    }
    fn null(&self, i: usize) -> bool {
        self.is_null(i)
    }
    fn put_int(&mut self, i: usize, v: i64) {
        self.set_int(i, v);
    }
    fn put_text(&mut self, i: usize, v: Option<&str>) {
        self.set_opt_str(i, v);
    }
}

/// The columns enrichment reads and fills in a table, found once per table.
struct EnrichCols {
    ip: Option<usize>,
    asn: Option<usize>,
    as_org: Option<usize>,
    country: Option<usize>,
    city: Option<usize>,
}

impl EnrichCols {
    fn of(table: Table) -> &'static EnrichCols {
        static ALL: std::sync::OnceLock<Vec<EnrichCols>> = std::sync::OnceLock::new();
        let all = ALL.get_or_init(|| {
            crate::lake::ALL_TABLES
                .iter()
                .map(|t| EnrichCols {
                    ip: t.col("source_ip").or_else(|| t.col("caller_ip")),
                    asn: t.col("source_asn"),
                    as_org: t.col("source_as_org"),
                    country: t.col("country"),
                    city: t.col("city"),
                })
                .collect()
        });
        &all[table as usize]
    }
}
