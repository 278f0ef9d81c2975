//! A typed reader for the hottest record shapes: sign-ins, Graph activity and Entra audit records
//! ([`audit`]) in diagnostic-settings form (storage account JSON lines, `{"time", "category":
//! "…SignInLogs", "MicrosoftGraphActivityLogs" or "AuditLogs", "properties": {…}, …}`), read
//! straight from the line's text into a row, without a `serde_json::Value` tree or lenient lookups. The category must come before the
//! properties (it does in Azure's exports): it says how they are read; any other category stops
//! the reader at once, and an Azure activity or resource-log record's is read again by [`azure`]
//! (its envelope has other fields; sign-ins do not pay for reading them), as an Office 365 audit
//! record is by [`o365`] once the reader meets its `CreationTime`.
//!
//! It maps a record exactly as [`super::entra::from_diagnostic`] does, or not at all: anything it
//! is not sure of (a key that differs from the expected one only in case or underscores, a string
//! where an object is expected, an escaped key, a float where text is expected, a missing time, an
//! envelope, another category…) makes it answer `None`, and the record takes the general path,
//! which gives the same row or the same rejection as before. A unit test checks the two paths agree
//! on every record the typed one accepts.

use super::entra::canonical_signin_category_of;
use super::Mapped;
use crate::ingest::normalize::{folded_hash, parse_time};
use crate::lake::rows::CompactRow;
use crate::lake::Table;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

/// A JSON scalar as the general path's accessors read it.
#[derive(Default)]
enum Scalar<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// Why the typed path gave up (never shown: the general path takes the record).
struct Unsure;

impl<'a> Scalar<'a> {
    /// Present and not null (what `normalize::get` skips).
    fn is_some(&self) -> bool {
        !matches!(self, Scalar::Absent | Scalar::Null)
    }

    /// `normalize::as_str`: text as it is (empty → None), integers and booleans as text.
    fn text(&self) -> Result<Option<String>, Unsure> {
        Ok(match self {
            Scalar::Absent | Scalar::Null => None,
            Scalar::Str(s) if s.is_empty() => None,
            Scalar::Str(s) => Some(s.to_string()),
            Scalar::I64(n) => Some(n.to_string()),
            Scalar::U64(n) => Some(n.to_string()),
            Scalar::Bool(b) => Some(b.to_string()),
            // serde_json's float formatting is not reproduced here.
            Scalar::F64(_) => return Err(Unsure),
        })
    }

    /// [`Scalar::text`] borrowed where it can be.
    fn text_cow(&self) -> Result<Option<Cow<'_, str>>, Unsure> {
        Ok(match self {
            Scalar::Str(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_ref())),
            Scalar::Str(_) | Scalar::Absent | Scalar::Null => None,
            other => other.text()?.map(Cow::Owned),
        })
    }

    /// `normalize::as_i64`.
    fn int(&self) -> Option<i64> {
        match self {
            Scalar::I64(n) => Some(*n),
            Scalar::U64(n) => Some(i64::try_from(*n).unwrap_or(*n as f64 as i64)),
            Scalar::F64(f) => Some(*f as i64),
            Scalar::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// `normalize::time_of`.
    fn time(&self) -> Option<i64> {
        match self {
            Scalar::Str(s) => parse_time(s),
            Scalar::I64(n) => parse_time(&n.to_string()),
            Scalar::U64(n) => i64::try_from(*n).ok().and_then(|n| parse_time(&n.to_string())),
            _ => None,
        }
    }

    /// `normalize::b`.
    fn boolean(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            Scalar::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Scalar::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

/// The first present, non-null one (`normalize::get` over several names).
fn first<'s, 'a>(options: &[&'s Scalar<'a>]) -> &'s Scalar<'a> {
    options.iter().find(|s| s.is_some()).copied().unwrap_or(&Scalar::Absent)
}

/// A text column from a property (NULL when absent or null).
fn text(r: &mut CompactRow, i: usize, v: &Scalar) -> Result<(), Unsure> {
    r.set_opt_str(i, v.text_cow()?.as_deref());
    Ok(())
}

/// A property, else the envelope's field of that name.
fn or_env(r: &mut CompactRow, i: usize, v: &Scalar, env: &Scalar) -> Result<(), Unsure> {
    match v.text_cow()? {
        Some(t) => r.set_str(i, &t),
        None => r.set_opt_str(i, env.text_cow()?.as_deref()),
    }
    Ok(())
}

/// An address normalized as `normalize::ip` does: borrowed from the record when it is the text
/// itself (a plain dotted quad).
fn ip_of<'s>(v: &'s Scalar) -> Result<Option<Cow<'s, str>>, Unsure> {
    Ok(match v.text_cow()? {
        Some(Cow::Borrowed(t)) => wisp_udfs::ip::normalize_cow(t),
        Some(Cow::Owned(t)) => wisp_udfs::ip::normalize(&t).map(Cow::Owned),
        None => None,
    })
}

/// The first of `options` that holds an address, normalized (`entra::source_ip`'s order).
fn first_address<'s>(options: &[&'s Scalar]) -> Result<Option<Cow<'s, str>>, Unsure> {
    for v in options {
        if let Some(ip) = ip_of(v)? {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// The property's address, else the caller's (no ECS address in diagnostic settings), normalized.
fn address<'s>(ip: &'s Scalar, top: &'s Top) -> Result<Option<Cow<'s, str>>, Unsure> {
    first_address(&[ip, &top.caller_ip])
}

/// The event's time: its own, else the envelope's; one outside the accepted range is left to the
/// general path.
fn event_time(own: &Scalar, top: &Top) -> Result<i64, Unsure> {
    let ts = own.time().or_else(|| top.time.time()).ok_or(Unsure)?;
    if crate::time::in_range(ts) {
        Ok(ts)
    } else {
        Err(Unsure)
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON scalar")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(s)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(Scalar::I64(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(match i64::try_from(n) {
                    Ok(n) => Scalar::I64(n),
                    Err(_) => Scalar::U64(n),
                })
            }
            fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
                Ok(Scalar::F64(f))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
        }
        d.deserialize_any(V)
    }
}

/// The names' hashes as `normalize` folds keys (ASCII case and underscores ignored): equal for
/// any two keys the general path takes for one another.
fn folded(names: &[&str]) -> Vec<u64> {
    names.iter().map(|n| folded_hash(n)).collect()
}

/// A key the typed reader does not read: fine, unless the general path could take it for one it
/// looks up (`names`: their [`folded`] hashes; a collision only sends the record the general way).
fn unknown<'de, A: MapAccess<'de>>(map: &mut A, key: &str, names: &[u64]) -> Result<(), A::Error> {
    if names.contains(&folded_hash(key)) {
        return Err(de::Error::custom("a key the general path may read"));
    }
    map.next_value::<IgnoredAny>()?;
    Ok(())
}

/// Reads `{key: scalar, …}` with the given keys exactly; other keys as [`unknown`].
fn small_object<'de, A: MapAccess<'de>, const N: usize>(
    map: &mut A,
    keys: [&str; N],
) -> Result<[Scalar<'de>; N], A::Error> {
    let mut out: [Scalar<'de>; N] = std::array::from_fn(|_| Scalar::Absent);
    while let Some(k) = map.next_key::<&'de str>()? {
        match keys.iter().position(|&w| w == k) {
            Some(i) => out[i] = map.next_value()?,
            None => unknown(map, k, &folded(&keys))?,
        }
    }
    Ok(out)
}

/// `properties.status` (its error code and failure reason).
#[derive(Default)]
struct Status<'a> {
    error_code: Scalar<'a>,
    failure_reason: Scalar<'a>,
}

/// `properties.location` (country and city).
#[derive(Default)]
struct Location<'a> {
    country: Scalar<'a>,
    city: Scalar<'a>,
}

/// A nested object (`status`, `location`): present as an object, null, or absent. Any other value
/// (a JSON string the general path would parse, an array) is a reason to give up.
enum Nested<T> {
    Null,
    Object(T),
}

macro_rules! nested_object {
    ($ty:ident, $keys:expr, |$arr:ident| $build:expr) => {
        impl<'de> de::Deserialize<'de> for Nested<$ty<'de>> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Nested<$ty<'de>>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("an object or null")
                    }
                    fn visit_unit<E>(self) -> Result<Self::Value, E> {
                        Ok(Nested::Null)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                        let $arr = small_object(&mut map, $keys)?;
                        Ok(Nested::Object($build))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

nested_object!(Status, ["errorCode", "failureReason"], |a| {
    let [error_code, failure_reason] = a;
    Status { error_code, failure_reason }
});

nested_object!(Location, ["countryOrRegion", "city"], |a| {
    let [country, city] = a;
    Location { country, city }
});

/// A properties object read into the place made for it (a struct of some thirty fields: returned
/// by value, it was copied into its box, a kilobyte a record).
struct Fill<'r, T>(&'r mut T);

/// The next value, a properties object, read into a new box ([`Fill`]).
fn filled<'de, A: MapAccess<'de>, T: Default>(map: &mut A) -> Result<Box<T>, A::Error>
where
    for<'r> Fill<'r, T>: de::DeserializeSeed<'de, Value = ()>,
{
    let mut q = Box::<T>::default();
    map.next_value_seed(Fill(&mut *q))?;
    Ok(q)
}

/// A properties object the typed reader reads: the struct of its fields (each read from the key of
/// that exact name), the [`folded`] hashes of every name the general path looks up in it (`$names`:
/// the keys, and `$extra` — flat dotted names), and the visitor that fills it, any other key read
/// as [`unknown`].
macro_rules! typed_props {
    ($vis:vis $name:ident, $names:ident, $what:literal, extra: [$($extra:literal),*],
     { $($field:ident : $ty:ty = $key:literal),* $(,)? }) => {
        #[derive(Default)]
        $vis struct $name<'a> {
            $($field: $ty,)*
        }

        fn $names() -> &'static [u64] {
            static NAMES: OnceLock<Vec<u64>> = OnceLock::new();
            NAMES.get_or_init(|| folded(&[$($key,)* $($extra),*]))
        }

        impl<'de> de::DeserializeSeed<'de> for Fill<'_, $name<'de>> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                struct V<'r, 'de>(&'r mut $name<'de>);
                impl<'de> Visitor<'de> for V<'_, 'de> {
                    type Value = ();
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                        let out = self.0;
                        while let Some(k) = map.next_key::<&'de str>()? {
                            match k {
                                $($key => out.$field = map.next_value()?,)*
                                _ => unknown(&mut map, k, $names())?,
                            }
                        }
                        Ok(())
                    }
                }
                d.deserialize_map(V(self.0))
            }
        }
    };
}

// The sign-in properties `entra::signin` reads (`status.errorCode` and `status.failureReason` are
// looked up flat too). A nested object null and one absent are read alike.
typed_props!(Props, props_names, "a sign-in properties object", extra: ["status.errorCode", "status.failureReason"], {
    id: Scalar<'a> = "id",
    tenant_id: Scalar<'a> = "tenantId",
    resource_tenant_id: Scalar<'a> = "resourceTenantId",
    correlation_id: Scalar<'a> = "correlationId",
    unique_token_id: Scalar<'a> = "uniqueTokenIdentifier",
    service_principal_id: Scalar<'a> = "servicePrincipalId",
    service_principal_name: Scalar<'a> = "servicePrincipalName",
    app_id: Scalar<'a> = "appId",
    app_display_name: Scalar<'a> = "appDisplayName",
    app_owner_tenant_id: Scalar<'a> = "appOwnerTenantId",
    user_id: Scalar<'a> = "userId",
    user_principal_name: Scalar<'a> = "userPrincipalName",
    resource_identity: Scalar<'a> = "resourceIdentity",
    resource_id: Scalar<'a> = "resourceId",
    resource_display_name: Scalar<'a> = "resourceDisplayName",
    home_tenant_id: Scalar<'a> = "homeTenantId",
    ip_address: Scalar<'a> = "ipAddress",
    asn: Scalar<'a> = "autonomousSystemNumber",
    result_type: Scalar<'a> = "resultType",
    result_description: Scalar<'a> = "resultDescription",
    client_credential_type: Scalar<'a> = "clientCredentialType",
    credential_key_id: Scalar<'a> = "servicePrincipalCredentialKeyId",
    user_agent: Scalar<'a> = "userAgent",
    is_interactive: Scalar<'a> = "isInteractive",
    created: Scalar<'a> = "createdDateTime",
    created_at: Scalar<'a> = "created_at",
    status: Option<Nested<Status<'a>>> = "status",
    location: Option<Nested<Location<'a>>> = "location",
    location_details: Option<Nested<Location<'a>>> = "locationDetails",
});

/// `roles`, `scopes`, `wids` of a Graph call: a list of scalars or one scalar (`join_list`).
#[derive(Default)]
enum ListOr<'a> {
    #[default]
    Absent,
    One(Scalar<'a>),
    List(Vec<Scalar<'a>>),
}

impl<'de> de::Deserialize<'de> for ListOr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListOr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON scalar or a list of them")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(ListOr::List(out))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(ListOr::One(Scalar::Str(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ListOr::One(Scalar::Str(Cow::Owned(s.to_string()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(ListOr::One(Scalar::Str(Cow::Owned(s))))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(ListOr::One(Scalar::I64(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(ListOr::One(match i64::try_from(n) {
                    Ok(n) => Scalar::I64(n),
                    Err(_) => Scalar::U64(n),
                }))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
                Ok(ListOr::One(Scalar::F64(f)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(ListOr::One(Scalar::Bool(b)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ListOr::One(Scalar::Null))
            }
        }
        d.deserialize_any(V)
    }
}

impl ListOr<'_> {
    /// `join_list(get(…))`: a list's items as text joined by spaces (an empty list is empty
    /// text), a scalar as [`Scalar::text`], null or absent → None.
    fn joined(&self) -> Result<Option<Cow<'_, str>>, Unsure> {
        match self {
            ListOr::Absent => Ok(None),
            ListOr::One(s) => s.text_cow(),
            ListOr::List(items) => {
                let mut out = String::new();
                for item in items {
                    if let Some(t) = item.text_cow()? {
                        if !out.is_empty() {
                            out.push(' ');
                        }
                        out.push_str(&t);
                    }
                }
                Ok(Some(Cow::Owned(out)))
            }
        }
    }
}

// The Graph activity properties `entra::graph_activity` reads (`time_generated` is the name it
// tries after `timeGenerated`: folded alike, so only listed).
typed_props!(GraphProps, graph_names, "a Graph activity properties object", extra: ["time_generated"], {
    request_id: Scalar<'a> = "requestId",
    id: Scalar<'a> = "id",
    operation_id: Scalar<'a> = "operationId",
    tenant_id: Scalar<'a> = "tenantId",
    app_id: Scalar<'a> = "appId",
    service_principal_id: Scalar<'a> = "servicePrincipalId",
    user_id: Scalar<'a> = "userId",
    ip_address: Scalar<'a> = "ipAddress",
    request_method: Scalar<'a> = "requestMethod",
    request_uri: Scalar<'a> = "requestUri",
    sign_in_activity_id: Scalar<'a> = "signInActivityId",
    roles: ListOr<'a> = "roles",
    scopes: ListOr<'a> = "scopes",
    wids: ListOr<'a> = "wids",
    user_agent: Scalar<'a> = "userAgent",
    response_size_bytes: Scalar<'a> = "responseSizeBytes",
    duration_ms: Scalar<'a> = "durationMs",
    response_status_code: Scalar<'a> = "responseStatusCode",
    client_auth_method: Scalar<'a> = "clientAuthMethod",
    time_generated: Scalar<'a> = "timeGenerated",
});

/// The envelope's fields `from_diagnostic` reads, and what makes a record something else.
#[derive(Default)]
struct Top<'a> {
    time: Scalar<'a>,
    category: Scalar<'a>,
    caller_ip: Scalar<'a>,
    tenant_id: Scalar<'a>,
    operation_name: Scalar<'a>,
    result_type: Scalar<'a>,
    correlation_id: Scalar<'a>,
    properties: Option<PropsOf<'a>>,
    /// Stopped at `CreationTime`, an Office 365 audit record's key.
    o365: bool,
}

/// The properties of a record whose category the typed reader knows.
enum PropsOf<'a> {
    Signin(Box<Props<'a>>),
    Graph(Box<GraphProps<'a>>),
    Audit(Box<audit::AuditProps<'a>>),
}

/// Whether the typed reader reads records of this diagnostic-settings category.
pub fn reads_category(category: &str) -> bool {
    kind_of_str(category).is_some() || azure::reads_category(category)
}

/// The kinds of record the typed reader reads, by their diagnostic-settings category.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Signin,
    Graph,
    Audit,
}

fn kind_of(category: &Scalar) -> Option<Kind> {
    let Scalar::Str(c) = category else { return None };
    kind_of_str(c)
}

fn kind_of_str(c: &str) -> Option<Kind> {
    if super::entra::SIGNIN_CATEGORIES.iter().any(|k| k.eq_ignore_ascii_case(c)) {
        Some(Kind::Signin)
    } else if c.eq_ignore_ascii_case("MicrosoftGraphActivityLogs") {
        Some(Kind::Graph)
    } else if c.eq_ignore_ascii_case("AuditLogs") {
        Some(Kind::Audit)
    } else {
        None
    }
}

/// Keys that make a record another format or an envelope (`formats::detect`, `envelope::items`).
const OTHER_SHAPES: [&str; 11] = [
    "@timestamp",
    "ecs",
    "event.ingested",
    "event_type",
    "records",
    "expected",
    "value",
    "hits",
    "_source",
    "TimeGenerated",
    "Type",
];

/// The envelope read into the place made for it: when the typed reader gives up at the category,
/// the caller still sees it (an Azure record's: [`azure`]).
impl<'de> de::DeserializeSeed<'de> for Fill<'_, Top<'de>> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        struct V<'r, 'de>(&'r mut Top<'de>);
        impl<'de> Visitor<'de> for V<'_, 'de> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a diagnostic-settings record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                let out = self.0;
                while let Some(k) = map.next_key::<&'de str>()? {
                    match k {
                        "time" => out.time = map.next_value()?,
                        // Another category: the general path reads it, and the typed reader stops
                        // here rather than read the rest of the line for nothing.
                        "category" => {
                            out.category = map.next_value()?;
                            if kind_of(&out.category).is_none() {
                                return Err(de::Error::custom("a category the typed reader does not read"));
                            }
                        }
                        "callerIpAddress" => out.caller_ip = map.next_value()?,
                        "tenantId" => out.tenant_id = map.next_value()?,
                        "operationName" => out.operation_name = map.next_value()?,
                        "resultType" => out.result_type = map.next_value()?,
                        "correlationId" => out.correlation_id = map.next_value()?,
                        // The properties are read as their category says: it must come first (as
                        // it does in Azure's exports), else the general path reads the record.
                        "properties" => {
                            out.properties = Some(match kind_of(&out.category) {
                                Some(Kind::Signin) => PropsOf::Signin(filled(&mut map)?),
                                Some(Kind::Graph) => PropsOf::Graph(filled(&mut map)?),
                                Some(Kind::Audit) => PropsOf::Audit(filled(&mut map)?),
                                None => return Err(de::Error::custom("properties before the category")),
                            })
                        }
                        // Read by the general path only for other categories.
                        "resourceId" | "workflowId" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ if OTHER_SHAPES.contains(&k) => return Err(de::Error::custom("another shape")),
                        // An Office 365 audit record's key: the caller may read it as one.
                        "CreationTime" => {
                            out.o365 = true;
                            return Err(de::Error::custom("an Office 365 record"));
                        }
                        _ => unknown(&mut map, k, top_names())?,
                    }
                }
                Ok(())
            }
        }
        d.deserialize_map(V(self.0))
    }
}

/// Top-level names the general path looks up, as [`folded`] hashes.
fn top_names() -> &'static [u64] {
    static NAMES: OnceLock<Vec<u64>> = OnceLock::new();
    NAMES.get_or_init(|| {
        folded(&[
            "time",
            "category",
            "callerIpAddress",
            "tenantId",
            "operationName",
            "resultType",
            "correlationId",
            "properties",
            "resourceId",
            "workflowId",
        ])
    })
}

/// The row of a diagnostic-settings sign-in, Graph activity, Azure activity or resource-log line,
/// as `map_record` would make it, or `None` when the record should take the general path.
pub fn diagnostic(line: &str) -> Option<Mapped> {
    let m = diagnostic_compact(line)?;
    Some(Mapped { table: m.table, ts: m.ts, dedup_id: m.id, row: m.row.to_values(), ingested_at: None })
}

/// [`diagnostic`], Office 365 audit records included: the row `map_record` makes of the line with
/// `Format::Auto`, or `None` when the record should take the general path.
pub fn detected(line: &str) -> Option<Mapped> {
    let m = compact_with(line, true, true)?;
    Some(Mapped { table: m.table, ts: m.ts, dedup_id: m.id, row: m.row.to_values(), ingested_at: None })
}

/// A record read by the typed reader: its table, time, id and row (`ts`, `ingested_at`, `raw`
/// and `_key` left null for the caller, as in [`Mapped`]).
pub struct CompactMapped {
    pub table: Table,
    pub ts: i64,
    pub id: Option<String>,
    pub row: CompactRow,
}

/// [`diagnostic`]'s row as a [`CompactRow`] (no `Value` built), with room for the raw line that
/// the caller adds.
pub fn diagnostic_compact(line: &str) -> Option<CompactMapped> {
    diagnostic_compact_with(line, true)
}

/// [`diagnostic_compact`], with room in the row for the raw line only when `raw_inline` (a
/// caller that keeps the line apart, as an external cell, needs none).
pub fn diagnostic_compact_with(line: &str, raw_inline: bool) -> Option<CompactMapped> {
    compact_with(line, raw_inline, false)
}

/// [`diagnostic_compact_with`], and with `o365` an Office 365 audit record too (the typed reader's
/// row for a line whose format is detected, as `map_record`'s `Format::Auto`).
pub fn compact_with(line: &str, raw_inline: bool, o365: bool) -> Option<CompactMapped> {
    // The properties' text is at most the line's (half of it is room enough mostly).
    let room = if raw_inline { line.len() + line.len() / 2 } else { line.len() / 2 };
    let mut top = Top::default();
    if super::json::from_str_seed(line, Fill(&mut top)).is_err() {
        // Stopped at an Azure record's category or at an Office 365 record's key: their own
        // readers read the line.
        if o365 && top.o365 {
            return o365::compact(line, room);
        }
        return azure::reads(&top.category).then(|| azure::compact(line, room)).flatten();
    }
    // `formats::detect`: diagnostic settings need `time`, `category` and `properties`.
    if matches!(top.time, Scalar::Absent) {
        return None;
    }
    // The category that chose how the properties were read is still the record's (a duplicate
    // key may have changed it).
    match (&top.properties, kind_of(&top.category)?) {
        (Some(PropsOf::Signin(q)), Kind::Signin) => signin_row(&top, q, room).ok(),
        (Some(PropsOf::Graph(q)), Kind::Graph) => graph_row(&top, q, room).ok(),
        (Some(PropsOf::Audit(q)), Kind::Audit) => audit::row(&top, q, room).ok(),
        _ => None,
    }
}

/// A struct of a table's column indexes, each field named as its column, and the function that
/// finds them once (a column missing from the table's schema is a bug: it panics on first use).
macro_rules! column_indexes {
    ($(#[$m:meta])* $name:ident, $get:ident, $table:expr, [$($col:ident),* $(,)?]) => {
        $(#[$m])*
        struct $name {
            $($col: usize),*
        }

        fn $get() -> &'static $name {
            static COLS: OnceLock<$name> = OnceLock::new();
            COLS.get_or_init(|| {
                let t: Table = $table;
                let c = |n: &str| t.col(n).unwrap_or_else(|| panic!("{} has no column {n}", t.name()));
                $name { $($col: c(stringify!($col))),* }
            })
        }
    };
}

column_indexes! {
    /// The sign-in table's columns the typed reader sets, found once.
    Cols, cols, Table::Signins,
    [
        category,
        id,
        tenant_id,
        correlation_id,
        unique_token_id,
        service_principal_id,
        service_principal_name,
        app_id,
        app_display_name,
        app_owner_tenant_id,
        user_id,
        user_principal_name,
        resource_id,
        resource_display_name,
        resource_tenant_id,
        home_tenant_id,
        source_ip,
        source_asn,
        country,
        city,
        error_code,
        failure_reason,
        client_credential_type,
        credential_key_id,
        user_agent,
        is_interactive,
        operation_name,
    ]
}

fn signin_row(top: &Top, q: &Props, room: usize) -> Result<CompactMapped, Unsure> {
    let Scalar::Str(category) = &top.category else { return Err(Unsure) };
    let c = cols();
    let mut r = CompactRow::new(Table::Signins, room);
    r.set_str(c.category, canonical_signin_category_of(category));
    let id = q.id.text()?;
    r.set_opt_str(c.id, id.as_deref());
    or_env(&mut r, c.tenant_id, first(&[&q.tenant_id, &q.resource_tenant_id]), &top.tenant_id)?;
    or_env(&mut r, c.correlation_id, &q.correlation_id, &top.correlation_id)?;
    text(&mut r, c.unique_token_id, &q.unique_token_id)?;
    text(&mut r, c.service_principal_id, &q.service_principal_id)?;
    text(&mut r, c.service_principal_name, &q.service_principal_name)?;
    text(&mut r, c.app_id, &q.app_id)?;
    text(&mut r, c.app_display_name, &q.app_display_name)?;
    text(&mut r, c.app_owner_tenant_id, &q.app_owner_tenant_id)?;
    text(&mut r, c.user_id, &q.user_id)?;
    text(&mut r, c.user_principal_name, &q.user_principal_name)?;
    text(&mut r, c.resource_id, first(&[&q.resource_identity, &q.resource_id]))?;
    text(&mut r, c.resource_display_name, &q.resource_display_name)?;
    text(&mut r, c.resource_tenant_id, &q.resource_tenant_id)?;
    text(&mut r, c.home_tenant_id, &q.home_tenant_id)?;
    r.set_opt_str(c.source_ip, address(&q.ip_address, top)?.as_deref());
    r.set_opt_int(c.source_asn, q.asn.int());
    // `nested(["location", "locationDetails"])`: the first present and non-null; not an object →
    // no country or city.
    let loc = match (&q.location, &q.location_details) {
        (Some(Nested::Object(l)), _) => Some(l),
        (None | Some(Nested::Null), Some(Nested::Object(l))) => Some(l),
        _ => None,
    };
    if let Some(l) = loc {
        text(&mut r, c.country, &l.country)?;
        text(&mut r, c.city, &l.city)?;
    }
    // `status.errorCode`, else `resultType`: the first non-null as an integer, else the envelope's.
    let status = match &q.status {
        Some(Nested::Object(s)) => Some(s),
        _ => None,
    };
    let no = Scalar::Absent;
    let code =
        first(&[status.map_or(&no, |s| &s.error_code), &q.result_type]).int().or_else(|| match &top.result_type {
            Scalar::Absent | Scalar::Null => None,
            s => s.text_cow().ok().flatten().and_then(|t| t.trim().parse().ok()),
        });
    r.set_opt_int(c.error_code, code);
    text(&mut r, c.failure_reason, first(&[status.map_or(&no, |s| &s.failure_reason), &q.result_description]))?;
    text(&mut r, c.client_credential_type, &q.client_credential_type)?;
    text(&mut r, c.credential_key_id, &q.credential_key_id)?;
    text(&mut r, c.user_agent, &q.user_agent)?;
    r.set_opt_bool(c.is_interactive, q.is_interactive.boolean());
    r.set_str(c.operation_name, top.operation_name.text_cow()?.as_deref().unwrap_or("Sign-in activity"));
    let ts = event_time(first(&[&q.created, &q.created_at]), top)?;
    Ok(CompactMapped { table: Table::Signins, ts, id, row: r })
}

column_indexes! {
    /// The Graph activity table's columns the typed reader sets, found once.
    GraphCols, graph_cols, Table::GraphActivity,
    [
        id,
        operation_id,
        tenant_id,
        app_id,
        service_principal_id,
        user_id,
        source_ip,
        request_method,
        request_uri,
        sign_in_activity_id,
        roles,
        scopes,
        wids,
        user_agent,
        response_size_bytes,
        duration_ms,
        response_status_code,
        client_auth_method,
    ]
}

/// `entra::graph_activity` over the typed properties.
fn graph_row(top: &Top, q: &GraphProps, room: usize) -> Result<CompactMapped, Unsure> {
    let c = graph_cols();
    let mut r = CompactRow::new(Table::GraphActivity, room);
    let id = first(&[&q.request_id, &q.id]).text()?;
    r.set_opt_str(c.id, id.as_deref());
    text(&mut r, c.operation_id, &q.operation_id)?;
    or_env(&mut r, c.tenant_id, &q.tenant_id, &top.tenant_id)?;
    text(&mut r, c.app_id, &q.app_id)?;
    text(&mut r, c.service_principal_id, &q.service_principal_id)?;
    text(&mut r, c.user_id, &q.user_id)?;
    r.set_opt_str(c.source_ip, address(&q.ip_address, top)?.as_deref());
    text(&mut r, c.request_method, &q.request_method)?;
    text(&mut r, c.request_uri, &q.request_uri)?;
    text(&mut r, c.sign_in_activity_id, &q.sign_in_activity_id)?;
    r.set_opt_str(c.roles, q.roles.joined()?.as_deref());
    r.set_opt_str(c.scopes, q.scopes.joined()?.as_deref());
    r.set_opt_str(c.wids, q.wids.joined()?.as_deref());
    text(&mut r, c.user_agent, &q.user_agent)?;
    r.set_opt_int(c.response_size_bytes, q.response_size_bytes.int());
    r.set_opt_int(c.duration_ms, q.duration_ms.int());
    r.set_opt_int(c.response_status_code, q.response_status_code.int());
    r.set_opt_int(c.client_auth_method, q.client_auth_method.int());
    let ts = event_time(&q.time_generated, top)?;
    Ok(CompactMapped { table: Table::GraphActivity, ts, id, row: r })
}

mod audit;
mod azure;
mod o365;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::formats::{map_record, Format};
    use serde_json::json;
    use serde_json::Value;

    /// The typed path either declines or gives exactly the general path's row. Returns whether it
    /// took the line.
    fn agrees(line: &str) -> bool {
        let typed = detected(line);
        let Some(m) = typed else { return false };
        let v: Value = serde_json::from_str(line).expect("the typed path took valid JSON");
        let g = map_record(&v, Format::Auto)
            .unwrap_or_else(|e| panic!("general path rejects ({e}) what the typed path took: {line}"));
        assert_eq!(
            (m.table, m.ts, &m.dedup_id, &m.row, m.ingested_at),
            (g.table, g.ts, &g.dedup_id, &g.row, g.ingested_at),
            "{line}"
        );
        true
    }

    /// Variants of `base` for each key — of its properties, or of the record itself when
    /// `in_properties` is false: the key set to each scalar, renamed (another case, a leading
    /// underscore) and removed.
    fn variants<'a>(
        base: &Value,
        in_properties: bool,
        keys: impl IntoIterator<Item = &'a str>,
        scalars: &[Value],
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let with = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut r = base.clone();
            let o = if in_properties { &mut r["properties"] } else { &mut r };
            edit(o.as_object_mut().expect("an object"));
            r.to_string()
        };
        for key in keys {
            for v in scalars {
                lines.push(with(&|o| {
                    o.insert(key.to_string(), v.clone());
                }));
            }
            for other in [key.to_ascii_uppercase(), key.to_ascii_lowercase(), format!("_{key}")] {
                lines.push(with(&|o| {
                    if let Some(v) = o.remove(key) {
                        o.insert(other.clone(), v);
                    }
                }));
            }
            lines.push(with(&|o| {
                o.remove(key);
            }));
        }
        lines
    }

    fn base() -> Value {
        json!({
            "time": "2026-11-19T10:56:07.5528720Z", "category": "ServicePrincipalSignInLogs",
            "operationName": "Sign-in activity", "callerIpAddress": "11.4.120.85", "resultType": "0",
            "tenantId": "t-1", "correlationId": "c-top", "Level": 4,
            "resourceId": "/tenants/t-1/providers/Microsoft.aadiam",
            "properties": {
                "appId": "app-1", "appOwnerTenantId": "t-1", "clientCredentialType": "clientSecret",
                "correlationId": "c-1", "createdDateTime": "2026-11-19T10:56:07.5528720Z", "id": "id-1",
                "ipAddress": "11.4.120.85", "isInteractive": false,
                "location": {"city": "", "countryOrRegion": "US", "geoCoordinates": {"latitude": 0.0}},
                "resourceDisplayName": "Microsoft Graph", "resourceId": "res-1",
                "servicePrincipalCredentialKeyId": "key-1", "servicePrincipalId": "sp-1",
                "servicePrincipalName": "svc-payroll-0", "status": {"errorCode": 0, "failureReason": null},
                "appliedConditionalAccessPolicies": [], "riskDetail": "none", "autonomousSystemNumber": 8075
            }
        })
    }

    #[test]
    fn typed_sign_ins_equal_the_general_path() {
        let mut took = 0;
        let mut lines = vec![base().to_string()];
        let scalars = [
            json!(null),
            json!(""),
            json!(42),
            json!(-7),
            json!(18446744073709551615u64),
            json!(1.5),
            json!(true),
            json!(" 7 "),
            json!("TRUE"),
            json!("False"),
            json!("a\"b\\c\u{e9}"),
            json!({}),
            json!([]),
            json!("2026-11-19T10:00:00Z"),
            json!("{\"city\":\"Paris\"}"),
        ];
        let prop_keys: Vec<String> = base()["properties"].as_object().unwrap().keys().cloned().collect();
        let extra = [
            "tenantId",
            "resourceTenantId",
            "resultType",
            "resultDescription",
            "created_at",
            "locationDetails",
            "userAgent",
            "resourceIdentity",
        ];
        lines.extend(variants(&base(), true, prop_keys.iter().map(String::as_str).chain(extra), &scalars));
        let top = [
            "time",
            "category",
            "operationName",
            "callerIpAddress",
            "resultType",
            "tenantId",
            "correlationId",
            "properties",
        ];
        lines.extend(variants(&base(), false, top, &scalars));
        for (k, v) in [
            ("status", json!({"ErrorCode": 5})),
            ("status", json!({"errorCode": null, "failureReason": "x"})),
            ("status", json!({"errorCode": "50126"})),
            ("status", json!({"errorCode": "abc"})),
            ("status", json!(null)),
            ("status", json!("{\"errorCode\":1}")),
            ("status.errorCode", json!(9)),
            ("Status.ErrorCode", json!(9)),
            ("location", json!(null)),
            ("location", json!({"City": "x"})),
            ("location", json!({"countryOrRegion": 7})),
        ] {
            for with_details in [false, true] {
                let mut r = base();
                r["properties"][k] = v.clone();
                if with_details {
                    r["properties"]["locationDetails"] = json!({"countryOrRegion": "FR", "city": "Paris"});
                    r["properties"]["resultType"] = json!("70001");
                }
                lines.push(r.to_string());
            }
        }
        for (k, v) in [
            ("category", json!("serviceprincipalsigninlogs")),
            ("category", json!("managedIdentitySignInLogs")),
            ("category", json!("AuditLogs")),
            ("category", json!("Administrative")),
            ("records", json!([])),
            ("@timestamp", json!("x")),
            ("time", json!("0001-01-01T00:00:00Z")),
            ("time", json!(1795000000)),
        ] {
            let mut r = base();
            r[k] = v.clone();
            lines.push(r.to_string());
        }
        // Duplicate keys (the last wins in both), an escaped key, spacing.
        let b = base().to_string();
        lines.push(b.replacen("\"properties\":{", "\"properties\":{\"appId\":\"first\",", 1));
        lines.push(b.replacen("\"appId\"", "\"app\\u0049d\"", 1));
        lines.push(b.replace(",", " ,\n\t").replace(":", " : "));
        for line in &lines {
            if agrees(line) {
                took += 1;
            }
        }
        // Most variants stay typed (the test would pass vacuously otherwise).
        assert!(took > lines.len() / 2, "typed path took {took} of {}", lines.len());
        assert!(agrees(&base().to_string()));
    }

    fn activity_base() -> Value {
        json!({
            "time": "2026-11-19T06:44:46.7591900Z", "category": "Administrative",
            "callerIpAddress": "18.206.236.27", "correlationId": "c-1", "level": "Information",
            "operationName": "MICROSOFT.KEYVAULT/VAULTS/READ", "resultSignature": "Succeeded.OK",
            "resultType": "Success", "durationMs": 0, "tenantId": "t-1",
            "resourceId": "/SUBSCRIPTIONS/s-1/RESOURCEGROUPS/RG-5/PROVIDERS/MICROSOFT.STORAGE/STORAGEACCOUNTS/SA51",
            "identity": {
                "authorization": {"action": "Microsoft.Storage/read", "evidence": {"role": "Reader"}},
                "claims": {
                    "appid": "app-1", "aud": "https://management.core.windows.net/",
                    "http://schemas.microsoft.com/identity/claims/objectidentifier": "oid-1",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "a@b.example",
                    "http://schemas.microsoft.com/identity/claims/tenantid": "t-1"
                }
            },
            "properties": {"eventDataId": "e-1", "statusCode": "OK", "entity": "/subscriptions/s-1"}
        })
    }

    /// The scalars each key of the Azure records is tried with.
    fn azure_scalars() -> Vec<Value> {
        vec![
            json!(null),
            json!(""),
            json!(42),
            json!(-7),
            json!(18446744073709551615u64),
            json!(1.5),
            json!(true),
            json!(" 7 "),
            json!("66.9"),
            json!("a\"b\\c\u{e9}"),
            json!({}),
            json!([]),
            json!("2026-11-19T10:00:00Z"),
            json!("{\"appid\":\"x\"}"),
            json!("::ffff:10.0.0.1"),
            json!("/providers/Microsoft.aadiam/x"),
            json!("/subscriptions/s-9/resourceGroups//providers/P/t/n"),
        ]
    }

    /// Takes `lines` through [`agrees`]; most must be typed (the test is not vacuous).
    fn most_agree(lines: &[String]) {
        let took = lines.iter().filter(|l| agrees(l)).count();
        assert!(took > lines.len() / 2, "typed path took {took} of {}", lines.len());
    }

    #[test]
    fn typed_activity_records_equal_the_general_path() {
        let b = activity_base();
        assert!(agrees(&b.to_string()), "the base record is typed");
        let mut lines = vec![b.to_string()];
        let top = [
            "time",
            "category",
            "callerIpAddress",
            "correlationId",
            "level",
            "operationName",
            "resultSignature",
            "resultType",
            "resourceId",
            "identity",
            "properties",
            "eventDataId",
            "id",
            "operationNameValue",
            "categoryValue",
            "activityStatusValue",
            "caller",
            "subscriptionId",
            "resourceGroup",
            "resourceProviderValue",
            "eventTimestamp",
            "workflowId",
            "claims",
            "claims.appid",
            "_ResourceId",
        ];
        lines.extend(variants(&b, false, top, &azure_scalars()));
        lines.extend(variants(&b, true, ["eventDataId", "EventDataId", "statusCode"], &azure_scalars()));
        for (k, v) in [
            ("claims", json!(null)),
            ("claims", json!("x")),
            ("claims", json!({"appid": 7, "http://schemas.microsoft.com/identity/claims/objectidentifier": "o"})),
            ("claims", json!({"APPID": "x"})),
            ("claims", json!({"http://schemas": {"microsoft.com/identity/claims/objectidentifier": "o"}})),
            ("claims", json!({"upn": "u", "oid": "o"})),
            ("claim", json!({"appid": "x"})),
            ("Claims", json!({"appid": "x"})),
        ] {
            let mut r = b.clone();
            r["identity"][k] = v;
            lines.push(r.to_string());
        }
        for identity in [json!(null), json!("someone"), json!("{\"claims\":{\"appid\":\"x\"}}"), json!({})] {
            let mut r = b.clone();
            r["identity"] = identity;
            lines.push(r.to_string());
        }
        for category in ["administrative", "Policy", "Action", "Security"] {
            let mut r = b.clone();
            r["category"] = json!(category);
            lines.push(r.to_string());
        }
        // No properties: typed with an operation name; without one, not diagnostic settings.
        let mut r = b.clone();
        r.as_object_mut().unwrap().remove("properties");
        assert!(agrees(&r.to_string()), "{r}");
        r.as_object_mut().unwrap().remove("operationName");
        assert!(diagnostic(&r.to_string()).is_none());
        lines.push(r.to_string());
        // The activity log of an Entra tenant (left to the general path), a caller of its own.
        let mut r = b.clone();
        r["resourceId"] = json!("/tenants/t-1/providers/Microsoft.aadiam");
        assert!(diagnostic(&r.to_string()).is_none());
        lines.push(r.to_string());
        let mut r = b.clone();
        r["caller"] = json!("someone@b.example");
        r["subscriptionId"] = json!("s-own");
        lines.push(r.to_string());
        // The identity before the category: declined.
        let text = b.to_string();
        let moved = text.replacen("\"category\":\"Administrative\",", "", 1).replacen(
            "\"properties\":",
            "\"category\":\"Administrative\",\"properties\":",
            1,
        );
        assert!(moved.find("\"identity\"") < moved.find("\"category\""), "{moved}");
        assert!(diagnostic(&moved).is_none(), "identity before the category");
        lines.push(moved);
        most_agree(&lines);
    }

    fn resource_base() -> Value {
        json!({
            "time": "2026-11-19T02:01:06.6832600Z", "category": "AuditEvent",
            "callerIpAddress": "10.23.37.4", "correlationId": "c-1", "operationName": "SecretGet",
            "operationVersion": "7.4", "resultType": "Success", "resultSignature": "OK",
            "resultDescription": "", "durationMs": "66",
            "identity": {"claim": {
                "appid": "app-1", "ipaddr": "10.23.37.4",
                "http://schemas.microsoft.com/identity/claims/objectidentifier": "oid-1",
                "http://schemas.microsoft.com/identity/claims/tenantid": "t-1",
                "http://schemas.microsoft.com/claims/authnmethodsreferences": "pwd"
            }},
            "properties": {
                "httpStatusCode": 200, "id": "https://kv-27.vault.azure.net/secrets/app-secret",
                "requestUri": "https://kv-27.vault.azure.net/secrets/app-secret?api-version=7.4",
                "clientInfo": "azsdk-python/4.7", "isAccessPolicyMatch": true
            },
            "resourceId": "/SUBSCRIPTIONS/s-1/RESOURCEGROUPS/RG-KV/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV-27"
        })
    }

    #[test]
    fn typed_resource_logs_equal_the_general_path() {
        let b = resource_base();
        assert!(agrees(&b.to_string()), "the base record is typed");
        let mut lines = vec![b.to_string()];
        let top = [
            "time",
            "category",
            "callerIpAddress",
            "correlationId",
            "operationName",
            "operationVersion",
            "resultType",
            "resultSignature",
            "resultDescription",
            "durationMs",
            "identity",
            "properties",
            "resourceId",
            "workflowId",
            "tenantId",
            "id",
            "requestId",
            "statusCode",
            "subscriptionId",
            "resourceGroup",
            "ResourceProvider",
            "userAgentHeader",
            "identity_claim_oid_g",
            "level",
        ];
        lines.extend(variants(&b, false, top, &azure_scalars()));
        let props = [
            "httpStatusCode",
            "id",
            "requestUri",
            "clientInfo",
            "isAccessPolicyMatch",
            "resultType",
            "status",
            "statusText",
            "resultSignature",
            "code",
            "statusCode",
            "userAgentHeader",
            "requestId",
            "id_s",
        ];
        lines.extend(variants(&b, true, props, &azure_scalars()));
        for (k, v) in [
            ("claim", json!(null)),
            ("claim", json!("x")),
            ("claims", json!({"appid": "other", "oid": "o-2", "upn": "u", "tid": "t-2"})),
            ("requester", json!({"objectId": "o-3", "appId": "a-3", "upn": "u-3", "tenantId": "t-3"})),
            ("requester", json!({"ObjectId": "o-3"})),
            ("requester", json!(null)),
            ("requester", json!(7)),
            ("Claim", json!({"appid": "x"})),
        ] {
            for without_claim in [false, true] {
                let mut r = b.clone();
                if without_claim {
                    r["identity"].as_object_mut().unwrap().remove("claim");
                }
                r["identity"][k] = v.clone();
                lines.push(r.to_string());
            }
        }
        // The caller's tenant from the record itself when neither claims nor requester say it.
        for tenant in [json!("t-top"), json!(null), json!(""), json!(5)] {
            let mut r = b.clone();
            r["identity"]["claim"]
                .as_object_mut()
                .unwrap()
                .remove("http://schemas.microsoft.com/identity/claims/tenantid");
            r["tenantId"] = tenant;
            assert!(agrees(&r.to_string()), "{r}");
            lines.push(r.to_string());
        }
        // No properties: the record's own id, else declined.
        let mut r = b.clone();
        r.as_object_mut().unwrap().remove("properties");
        assert!(diagnostic(&r.to_string()).is_none());
        r["id"] = json!("own-1");
        assert!(agrees(&r.to_string()), "{r}");
        lines.push(r.to_string());
        // No id of its own: the request URI with the correlation id; without either, declined
        // (the general path hashes the whole record).
        let mut r = b.clone();
        r["properties"].as_object_mut().unwrap().remove("id");
        assert!(agrees(&r.to_string()));
        r["properties"].as_object_mut().unwrap().remove("requestUri");
        assert!(diagnostic(&r.to_string()).is_none());
        lines.push(r.to_string());
        // Other resources' categories, and ones that are not resource logs.
        for category in ["StorageRead", "WorkflowRuntime", "auditevent", "AuditLogs", "SignInLogs"] {
            let mut r = b.clone();
            r["category"] = json!(category);
            lines.push(r.to_string());
        }
        for resource in ["", "/tenants/t/providers/microsoft.aadiam", "/subscriptions/s/providers", "a//b"] {
            let mut r = b.clone();
            r["resourceId"] = json!(resource);
            lines.push(r.to_string());
        }
        most_agree(&lines);
    }

    /// Every Azure and Entra record of the third-party fixtures (`../shared/fixtures/azure`): the
    /// typed path declines it or gives the general path's row.
    #[test]
    fn typed_rows_of_the_fixtures_equal_the_general_path() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/azure");
        if !dir.is_dir() {
            eprintln!("SKIPPED: ../shared/fixtures is missing ({}); this conformance test needs it", dir.display());
            return;
        }
        let mut records = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                // JSON lines, or one document (an envelope of records, a list).
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) if o.contains_key("records") => {
                        records.extend(o["records"].as_array().unwrap().iter().map(Value::to_string))
                    }
                    Ok(Value::Array(a)) => records.extend(a.iter().map(Value::to_string)),
                    Ok(v) => records.push(v.to_string()),
                    Err(_) => records.extend(text.lines().filter(|l| l.starts_with('{')).map(str::to_string)),
                }
            }
        }
        let took = records.iter().filter(|r| agrees(r)).count();
        assert!(took > 0, "no fixture record typed of {}", records.len());
    }

    fn o365_base() -> Value {
        json!({
            "AppId": "a667fa3d-72df-4bf7-9b20-059083170a4c", "ClientIPAddress": "11.10.15.223",
            "CreationTime": "2026-11-19T07:50:56", "Id": "7d6b2d90-5ea3-400d-b432-e307e3874ae7",
            "Operation": "MailItemsAccessed", "OrganizationId": "t-1", "RecordType": 50,
            "ResultStatus": "Succeeded", "UserId": "user4560@contoso.example", "UserType": 0,
            "Workload": "Exchange", "MailAccessType": "Bind", "OperationCount": 12,
            "Actor": [{"ID": "x", "Type": "0"}]
        })
    }

    #[test]
    fn typed_o365_records_equal_the_general_path() {
        let b = o365_base();
        assert!(agrees(&b.to_string()), "the base record is typed");
        assert!(diagnostic(&b.to_string()).is_none(), "only with the format detected");
        let mut lines = vec![b.to_string()];
        let keys = [
            "Id",
            "OfficeId",
            "OrganizationId",
            "RecordType",
            "Workload",
            "OfficeWorkload",
            "Operation",
            "ResultStatus",
            "UserId",
            "UserType",
            "ApplicationId",
            "AppId",
            "ClientAppId",
            "ClientIP",
            "ClientIPAddress",
            "ActorIpAddress",
            "CreationTime",
            "ExtendedProperties",
            "time",
            "category",
            "TimeGenerated",
            "Type",
            "@timestamp",
            "event_type",
            "records",
            "value",
            "operationName",
            "properties",
        ];
        let mut scalars = azure_scalars();
        scalars.extend([
            json!("failed"),
            json!(false),
            json!("FALSE"),
            json!("PartiallySucceeded"),
            json!("2026-11-19T07:50:56.1234567Z"),
            json!("10.0.0.1:443"),
            json!([{"Name": "extendedAuditEventCategory", "Value": "x"}]),
            json!([{"Name": "ResultStatusDetail", "Value": "Success"}]),
        ]);
        lines.extend(variants(&b, false, keys, &scalars));
        // With the record's status absent, the outcome from the extended properties (declined).
        let mut r = b.clone();
        r.as_object_mut().unwrap().remove("ResultStatus");
        r["ExtendedProperties"] = json!([{"Name": "ResultStatusDetail", "Value": "Success"}]);
        assert!(detected(&r.to_string()).is_none());
        lines.push(r.to_string());
        // CreationTime before a sign-in's category: a diagnostic record, read by the general path.
        let mut r = base();
        r["CreationTime"] = json!("2026-11-19T07:50:56");
        r["Operation"] = json!("x");
        lines.push(r.to_string());
        most_agree(&lines);
    }

    fn graph_base() -> Value {
        json!({
            "time": "2026-11-19T10:56:07.5528720Z", "category": "MicrosoftGraphActivityLogs",
            "operationName": "Microsoft Graph Activity", "callerIpAddress": "11.4.120.85", "tenantId": "t-1",
            "correlationId": "r-1", "durationMs": 9, "Level": 4, "resultSignature": "200",
            "resourceId": "/TENANTS/T-1/PROVIDERS/MICROSOFT.AADIAM",
            "properties": {
                "requestId": "r-1", "operationId": "r-1", "timeGenerated": "2026-11-19T10:56:07.1234567Z",
                "tenantId": "t-1", "appId": "app-1", "servicePrincipalId": "sp-1", "userId": null,
                "ipAddress": "11.4.120.85", "requestMethod": "GET",
                "requestUri": "https://graph.microsoft.com/v1.0/users", "signInActivityId": "s-1",
                "roles": "User.Read.All Mail.Read", "scopes": null, "wids": ["w-1", "w-2"],
                "userAgent": "python-requests/2.31", "responseSizeBytes": 364, "durationMs": 462,
                "responseStatusCode": 200, "clientAuthMethod": "1", "apiVersion": "v1.0"
            }
        })
    }

    #[test]
    fn typed_graph_calls_equal_the_general_path() {
        let mut lines = vec![graph_base().to_string()];
        let scalars = [
            json!(null),
            json!(""),
            json!(42),
            json!(-7),
            json!(4_000_000_000i64),
            json!(18446744073709551615u64),
            json!(1.5),
            json!(true),
            json!(" 7 "),
            json!("a\"b\\c\u{e9}"),
            json!({}),
            json!([]),
            json!(["a", "", null, 7, true]),
            json!(["a", 1.5]),
            json!(["a", {"b": 1}]),
            json!("2026-11-19T10:00:00Z"),
            json!("::ffff:10.0.0.1"),
        ];
        let prop_keys: Vec<String> = graph_base()["properties"].as_object().unwrap().keys().cloned().collect();
        let props = prop_keys.iter().map(String::as_str).chain(["id", "time_generated"]);
        lines.extend(variants(&graph_base(), true, props, &scalars));
        let top = ["time", "category", "callerIpAddress", "tenantId", "properties"];
        lines.extend(variants(&graph_base(), false, top, &scalars));
        // No request id nor time in the properties: the id and the envelope's time.
        let mut r = graph_base();
        let p = r["properties"].as_object_mut().unwrap();
        p.remove("requestId");
        p.remove("timeGenerated");
        p.insert("id".into(), json!("i-1"));
        lines.push(r.to_string());
        let b = graph_base().to_string();
        // The category's case, a sign-in's properties under Graph's category, and the category
        // after the properties (declined: the general path reads it).
        lines.push(b.replace("MicrosoftGraphActivityLogs", "microsoftgraphactivitylogs"));
        let no_category = b.replace("\"category\":\"MicrosoftGraphActivityLogs\",", "");
        let trimmed = &no_category[..no_category.len() - 1];
        lines.push(format!("{trimmed},\"category\":\"MicrosoftGraphActivityLogs\"}}"));
        lines.push(b.replacen("\"properties\":{", "\"properties\":{\"requestId\":\"first\",", 1));
        let mut took = 0;
        for line in &lines {
            if agrees(line) {
                took += 1;
            }
        }
        assert!(took > lines.len() / 2, "typed path took {took} of {}", lines.len());
        assert!(agrees(&b));
        let last = lines.len() - 2;
        assert!(diagnostic(&lines[last]).is_none(), "the category after the properties");
        // Other categories stop the typed reader at their category (audit's reads them as
        // audit properties, as the general path does).
        let risk = b.replace("MicrosoftGraphActivityLogs", "ServicePrincipalRiskEvents");
        assert!(diagnostic(&risk).is_none());
        assert!(agrees(&b.replace("MicrosoftGraphActivityLogs", "AuditLogs")));
    }

    fn audit_base() -> Value {
        json!({
            "time": "2026-11-19T13:48:08.9321330Z", "category": "AuditLogs", "operationName": "Add member to group",
            "callerIpAddress": "11.10.189.247", "tenantId": "t-1", "correlationId": "c-top", "Level": 4,
            "resourceId": "/tenants/t-1/providers/Microsoft.aadiam",
            "properties": {
                "activityDateTime": "2026-11-19T13:48:08.9321330Z", "activityDisplayName": "Add member to group",
                "additionalDetails": [{"key": "User-Agent", "value": "Graph Client"}, {"key": "AppId", "value": "a-9"}],
                "category": "GroupManagement", "id": "id-1", "correlationId": "c-1", "tenantId": "t-2",
                "initiatedBy": {
                    "user": {"id": "u-1", "ipAddress": "11.10.189.247", "userPrincipalName": "u@contoso.example"},
                    "app": {"appId": "a-1", "displayName": "payroll", "servicePrincipalId": "sp-1",
                            "servicePrincipalName": "svc", "ipAddress": "203.0.113.9"}
                },
                "loggedByService": "Core Directory", "operationType": "Update", "result": "success",
                "resultReason": "", "userAgent": null,
                "targetResources": [
                    {"displayName": "grp", "id": "g-1", "type": "Group", "userPrincipalName": null,
                     "modifiedProperties": [
                        {"displayName": "KeyDescription", "newValue": "[\"[KeyIdentifier=new]\"]", "oldValue": "[]"},
                        {"name": "Other", "newValue": null, "oldValue": "x"}
                     ]},
                    {"displayName": "user17130@contoso.example", "id": "u-2", "type": "User", "modifiedProperties": []}
                ]
            }
        })
    }

    #[test]
    fn typed_audit_records_equal_the_general_path() {
        let scalars = [
            json!(null),
            json!(""),
            json!(42),
            json!(18446744073709551615u64),
            json!(1.5),
            json!(true),
            json!("a\"b\\c\u{e9}"),
            json!({}),
            json!([]),
            json!([null]),
            json!([{}]),
            json!([{"key": "User-Agent", "value": "ua-2"}]),
            json!(["x"]),
            json!({"0": {"key": "k"}}),
            json!("[{\"key\":\"User-Agent\",\"value\":\"s\"}]"),
            json!("2026-11-19T10:00:00Z"),
            json!("::ffff:10.0.0.1"),
        ];
        let mut lines = vec![audit_base().to_string()];
        let prop_keys: Vec<String> = audit_base()["properties"].as_object().unwrap().keys().cloned().collect();
        let extra = ["operationName", "AADOperationType", "resultDescription", "userAgent"];
        lines.extend(variants(&audit_base(), true, prop_keys.iter().map(String::as_str).chain(extra), &scalars));
        let top = ["time", "category", "operationName", "callerIpAddress", "tenantId", "correlationId", "properties"];
        lines.extend(variants(&audit_base(), false, top, &scalars));
        // The nested objects' keys: the initiators', a detail's, a target's, a modified property's.
        let nested: [(&[&str], &[&str]); 5] = [
            (&["initiatedBy", "user"], &["id", "ipAddress", "userPrincipalName", "appId"]),
            (
                &["initiatedBy", "app"],
                &["appId", "displayName", "servicePrincipalId", "servicePrincipalName", "ipAddress"],
            ),
            (&["additionalDetails", "0"], &["key", "value"]),
            (&["targetResources", "0"], &["id", "displayName", "type", "userPrincipalName", "modifiedProperties"]),
            (&["targetResources", "0", "modifiedProperties", "1"], &["name", "displayName", "oldValue", "newValue"]),
        ];
        for (path, keys) in nested {
            for key in keys.iter().copied() {
                type Edit = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;
                let edits: Vec<Edit> = scalars
                    .iter()
                    .map(|v| {
                        let v = v.clone();
                        Box::new(move |o: &mut serde_json::Map<String, Value>| {
                            o.insert(key.to_string(), v.clone());
                        }) as Edit
                    })
                    .chain([key.to_ascii_uppercase(), format!("_{key}")].into_iter().map(|other| {
                        Box::new(move |o: &mut serde_json::Map<String, Value>| {
                            if let Some(v) = o.remove(key) {
                                o.insert(other.clone(), v);
                            }
                        }) as Edit
                    }))
                    .chain([Box::new(move |o: &mut serde_json::Map<String, Value>| {
                        o.remove(key);
                    }) as Edit])
                    .collect();
                for edit in edits {
                    let mut r = audit_base();
                    let mut at = &mut r["properties"];
                    for step in path {
                        at = match step.parse::<usize>() {
                            Ok(i) => &mut at[i],
                            Err(_) => &mut at[*step],
                        };
                    }
                    edit(at.as_object_mut().expect("an object"));
                    lines.push(r.to_string());
                }
            }
        }
        // Nested values of other shapes: null initiators, a user that is text, details without a
        // user agent, no targets, a null item among the targets.
        for (k, v) in [
            ("initiatedBy", json!({"user": null, "app": {"appId": "a-1"}})),
            ("initiatedBy", json!({"user": "u-1"})),
            ("initiatedBy", json!({})),
            ("additionalDetails", json!([{"key": "AppId", "value": "a-9"}, {"key": "user-agent", "value": "late"}])),
            ("additionalDetails", json!([{"key": "User-Agent"}, {"key": "USER-AGENT", "value": "second"}])),
            ("targetResources", json!([null, {"id": "t-9", "modifiedProperties": null}])),
            ("targetResources", json!([{"id": "t-9", "modifiedProperties": [null, {"newValue": 7}]}])),
        ] {
            let mut r = audit_base();
            r["properties"][k] = v;
            lines.push(r.to_string());
        }
        let b = audit_base().to_string();
        lines.push(b.replace("AuditLogs", "auditlogs"));
        lines.push(b.replacen("\"properties\":{", "\"properties\":{\"id\":\"first\",", 1));
        lines.push(b.replacen("\"targetResources\"", "\"target\\u0052esources\"", 1));
        let mut took = 0;
        for line in &lines {
            if agrees(line) {
                took += 1;
            }
        }
        // About half of the variants are of shapes it declines (lists and objects where text is
        // read, floats, keys in another case).
        assert!(took > lines.len() * 2 / 5, "typed path took {took} of {}", lines.len());
        assert!(agrees(&b), "the base record");
        // Its batch is the one the general path's values make (lists of structs included).
        let mut m = compact_with(&b, true, true).unwrap();
        let mut g = map_record(&serde_json::from_str(&b).unwrap(), Format::Auto).unwrap();
        for (i, v) in [(0, m.ts), (1, 7), (3, 9)] {
            m.row.set_int(i, v);
            g.row[i] = Value::from(v);
        }
        let typed = crate::lake::rows::compact_rows_to_batch(Table::Audit, &[m.row.clone(), m.row], "").unwrap();
        let general = crate::lake::rows::rows_to_batch(Table::Audit, &[g.row.clone(), g.row]).unwrap();
        assert_eq!(typed, general);
    }
}
