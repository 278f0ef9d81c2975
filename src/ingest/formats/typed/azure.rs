//! The typed reader's Azure records in diagnostic-settings form: the activity log's categories
//! (`entra::azure_activity`) and the logs of any other Azure resource (`resource::from_record`:
//! Key Vault's `AuditEvent`, Storage's, …). Each row is the general path's, read from the keys of
//! the exact names its mapper looks up first; a key the general path could take for one of its
//! names (another case, underscores), a nested value where it reads text, a string where it reads
//! an object, an envelope from an Entra tenant (`Microsoft.aadiam`), a record without its own id:
//! the typed reader declines, and the general path reads the record.

use super::*;

/// An Azure record's envelope: the fields `from_diagnostic` and the activity and resource-log
/// mappers read, each from the key of that exact name; which of them a kind's row reads, and
/// which other names its general path looks up, is [`Kind`]'s (see [`AzureTop::check`]).
#[derive(Default)]
pub(super) struct AzureTop<'a> {
    time: Scalar<'a>,
    category: Scalar<'a>,
    caller_ip: Scalar<'a>,
    tenant_id: Scalar<'a>,
    operation_name: Scalar<'a>,
    result_type: Scalar<'a>,
    correlation_id: Scalar<'a>,
    resource_id: Scalar<'a>,
    workflow_id: Scalar<'a>,
    operation_version: Scalar<'a>,
    result_signature: Scalar<'a>,
    result_description: Scalar<'a>,
    duration_ms: Scalar<'a>,
    level: Scalar<'a>,
    caller: Scalar<'a>,
    event_data_id: Scalar<'a>,
    id: Scalar<'a>,
    subscription_id: Scalar<'a>,
    resource_group: Scalar<'a>,
    resource_provider_value: Scalar<'a>,
    event_timestamp: Scalar<'a>,
    operation_name_value: Scalar<'a>,
    category_value: Scalar<'a>,
    activity_status_value: Scalar<'a>,
    /// `identity`, read when the category (before it) is known.
    identity: Option<Nested<Identity<'a>>>,
    /// An `identity` before the category: skipped, and the record left to the general path.
    identity_skipped: bool,
    properties: Option<Props<'a>>,
    /// The [`folded`] hashes of other keys that the general path of one kind or the other looks
    /// up (checked against the record's kind once it is known: [`AzureTop::check`]).
    hits: Hits,
}

/// A few folded key hashes, kept without an allocation.
#[derive(Default)]
struct Hits {
    n: usize,
    h: [u64; 4],
}

/// One of [`AzureTop`]'s scalar fields.
type Field = for<'x> fn(&'x AzureTop<'x>) -> &'x Scalar<'x>;

/// The envelope's scalar keys read into [`AzureTop`], with their fields.
const TOP_SCALARS: [(&str, Field); 24] = [
    ("time", |t| &t.time),
    ("category", |t| &t.category),
    ("callerIpAddress", |t| &t.caller_ip),
    ("tenantId", |t| &t.tenant_id),
    ("operationName", |t| &t.operation_name),
    ("resultType", |t| &t.result_type),
    ("correlationId", |t| &t.correlation_id),
    ("resourceId", |t| &t.resource_id),
    ("workflowId", |t| &t.workflow_id),
    ("operationVersion", |t| &t.operation_version),
    ("resultSignature", |t| &t.result_signature),
    ("resultDescription", |t| &t.result_description),
    ("durationMs", |t| &t.duration_ms),
    ("level", |t| &t.level),
    ("caller", |t| &t.caller),
    ("eventDataId", |t| &t.event_data_id),
    ("id", |t| &t.id),
    ("subscriptionId", |t| &t.subscription_id),
    ("resourceGroup", |t| &t.resource_group),
    ("resourceProviderValue", |t| &t.resource_provider_value),
    ("eventTimestamp", |t| &t.event_timestamp),
    ("operationNameValue", |t| &t.operation_name_value),
    ("categoryValue", |t| &t.category_value),
    ("activityStatusValue", |t| &t.activity_status_value),
];

/// The properties, read as the category says.
enum Props<'a> {
    Activity(Box<ActivityProps<'a>>),
    Resource(Box<ResourceProps<'a>>),
}

/// The Azure records the typed reader reads, by their diagnostic-settings category.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// The Azure activity log's categories (`Administrative`, `Policy`, …).
    Activity,
    /// Any category of no Entra or activity table: an Azure resource's logs (Key Vault's
    /// `AuditEvent`, Storage's, …), when the record names its resource.
    Resource,
}

fn kind_of_str(c: &str) -> Option<Kind> {
    if super::super::entra::SIGNIN_CATEGORIES.iter().any(|k| k.eq_ignore_ascii_case(c)) {
        return None;
    }
    match super::super::entra::table_of_category(c) {
        Some(Table::AzureActivity) => Some(Kind::Activity),
        None => Some(Kind::Resource),
        Some(_) => None,
    }
}

fn kind_of(category: &Scalar) -> Option<Kind> {
    let Scalar::Str(c) = category else { return None };
    kind_of_str(c)
}

/// Whether a record of this category (the typed sign-in reader's stop) is read here.
pub(super) fn reads(category: &Scalar) -> bool {
    kind_of(category).is_some()
}

/// [`reads`] of a category's text.
pub(super) fn reads_category(category: &str) -> bool {
    kind_of_str(category).is_some()
}

impl Kind {
    /// The envelope's names this kind's general path looks up (each also found case- and
    /// underscore-insensitively there): `from_diagnostic`'s, and its table's mapper's.
    fn top_names(self) -> &'static [&'static str] {
        match self {
            Kind::Activity => &ACTIVITY_TOP_NAMES,
            Kind::Resource => &RESOURCE_TOP_NAMES,
        }
    }

    /// [`Kind::top_names`] folded, and the [`TOP_SCALARS`] fields that are none of them but fold
    /// like one of them (the general path could take such a key for a name it looks up: the
    /// record is left to it).
    fn names(self) -> &'static (Vec<u64>, Vec<Field>) {
        static ALL: OnceLock<[(Vec<u64>, Vec<Field>); 2]> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            [Kind::Activity, Kind::Resource].map(|k| {
                let names = k.top_names();
                let folded = folded(names);
                let clashes = TOP_SCALARS
                    .iter()
                    .filter(|(key, _)| !names.contains(key) && folded.contains(&folded_hash(key)))
                    .map(|&(_, field)| field)
                    .collect();
                (folded, clashes)
            })
        });
        &all[self as usize]
    }
}

/// Both kinds' folded envelope names, sorted: a key outside [`TOP_SCALARS`] with one of these
/// hashes is kept in [`AzureTop::hits`] until the category is known.
fn any_top_names() -> &'static [u64] {
    static NAMES: OnceLock<Vec<u64>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut all: Vec<u64> = [Kind::Activity, Kind::Resource].iter().flat_map(|k| k.names().0.clone()).collect();
        all.sort_unstable();
        all.dedup();
        all
    })
}

impl AzureTop<'_> {
    /// Whether the general path would read this envelope as the typed reader does, for its kind:
    /// no other key it could take for a name it looks up.
    fn check(&self, kind: Kind) -> Result<(), Unsure> {
        let (names, clashes) = kind.names();
        if self.hits.h[..self.hits.n].iter().any(|h| names.contains(h))
            || clashes.iter().any(|field| !matches!(field(self), Scalar::Absent))
        {
            return Err(Unsure);
        }
        Ok(())
    }
}

impl<'de> de::DeserializeSeed<'de> for Fill<'_, AzureTop<'de>> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        struct V<'r, 'de>(&'r mut AzureTop<'de>);
        impl<'de> Visitor<'de> for V<'_, 'de> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an Azure diagnostic-settings record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                let out = self.0;
                while let Some(k) = map.next_key::<&'de str>()? {
                    match k {
                        "time" => out.time = map.next_value()?,
                        "category" => out.category = map.next_value()?,
                        "callerIpAddress" => out.caller_ip = map.next_value()?,
                        "tenantId" => out.tenant_id = map.next_value()?,
                        "operationName" => out.operation_name = map.next_value()?,
                        "resultType" => out.result_type = map.next_value()?,
                        "correlationId" => out.correlation_id = map.next_value()?,
                        "resourceId" => out.resource_id = map.next_value()?,
                        "workflowId" => out.workflow_id = map.next_value()?,
                        "operationVersion" => out.operation_version = map.next_value()?,
                        "resultSignature" => out.result_signature = map.next_value()?,
                        "resultDescription" => out.result_description = map.next_value()?,
                        "durationMs" => out.duration_ms = map.next_value()?,
                        "level" => out.level = map.next_value()?,
                        "caller" => out.caller = map.next_value()?,
                        "eventDataId" => out.event_data_id = map.next_value()?,
                        "id" => out.id = map.next_value()?,
                        "subscriptionId" => out.subscription_id = map.next_value()?,
                        "resourceGroup" => out.resource_group = map.next_value()?,
                        "resourceProviderValue" => out.resource_provider_value = map.next_value()?,
                        "eventTimestamp" => out.event_timestamp = map.next_value()?,
                        "operationNameValue" => out.operation_name_value = map.next_value()?,
                        "categoryValue" => out.category_value = map.next_value()?,
                        "activityStatusValue" => out.activity_status_value = map.next_value()?,
                        "identity" => match kind_of(&out.category) {
                            Some(_) => out.identity = Some(map.next_value()?),
                            None => {
                                map.next_value::<IgnoredAny>()?;
                                out.identity_skipped = true;
                            }
                        },
                        // Read as the category says: it must come first (as it does in Azure's
                        // exports), else the general path reads the record.
                        "properties" => {
                            out.properties = Some(match kind_of(&out.category) {
                                Some(Kind::Activity) => Props::Activity(filled(&mut map)?),
                                Some(Kind::Resource) => Props::Resource(filled(&mut map)?),
                                None => return Err(de::Error::custom("properties before the category")),
                            })
                        }
                        _ if OTHER_SHAPES.contains(&k) => return Err(de::Error::custom("another shape")),
                        _ => {
                            let h = folded_hash(k);
                            if any_top_names().binary_search(&h).is_ok() {
                                if out.hits.n == out.hits.h.len() {
                                    return Err(de::Error::custom("many keys the general path may read"));
                                }
                                out.hits.h[out.hits.n] = h;
                                out.hits.n += 1;
                            }
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(())
            }
        }
        d.deserialize_map(V(self.0))
    }
}

/// The row of an Azure activity or resource-log line, as `map_record` would make it, or `None`
/// when the record should take the general path (`room`: as [`diagnostic_compact_with`]'s).
pub(super) fn compact(line: &str, room: usize) -> Option<CompactMapped> {
    let mut top = AzureTop::default();
    super::super::json::from_str_seed(line, Fill(&mut top)).ok()?;
    // `formats::detect`: diagnostic settings need `time`, `category` and `properties` or
    // `operationName`.
    if matches!(top.time, Scalar::Absent) {
        return None;
    }
    // The category that chose how the properties were read is still the record's (a duplicate
    // key may have changed it).
    let kind = kind_of(&top.category)?;
    top.check(kind).ok()?;
    match (&top.properties, kind) {
        (Some(Props::Activity(q)), Kind::Activity) => activity_row(&top, q, room).ok(),
        (Some(Props::Resource(q)), Kind::Resource) => resource_row(&top, q, room).ok(),
        // No properties (`formats::detect` then needs an operation name): the mappers read an
        // empty object, as a properties object of none of the names they look up.
        (None, _) if matches!(top.operation_name, Scalar::Absent) => None,
        (None, Kind::Activity) => activity_row(&top, &ActivityProps::default(), room).ok(),
        (None, Kind::Resource) => resource_row(&top, &ResourceProps::default(), room).ok(),
        _ => None,
    }
}

/// The envelope names `from_diagnostic` and `entra::azure_activity` look up.
const ACTIVITY_TOP_NAMES: [&str; 26] = [
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
    "eventDataId",
    "id",
    "operationNameValue",
    "categoryValue",
    "activityStatusValue",
    "resultSignature",
    "level",
    "identity",
    "caller",
    "claims.appid",
    "claims",
    "_ResourceId",
    "subscriptionId",
    "resourceGroup",
    "resourceProviderValue",
    "eventTimestamp",
];

/// The envelope names `from_diagnostic` and `resource::from_record` look up.
const RESOURCE_TOP_NAMES: [&str; 64] = [
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
    "identity",
    "Category",
    "OperationName",
    "operationVersion",
    "OperationVersion",
    "ResourceId",
    "_ResourceId",
    "ResourceProvider",
    "ResourceType",
    "Resource",
    "SubscriptionId",
    "ResourceGroup",
    "ResultType",
    "status",
    "statusText",
    "resultSignature",
    "ResultSignature",
    "code",
    "resultDescription",
    "ResultDescription",
    "statusCode",
    "httpStatusCode",
    "httpStatusCode_d",
    "StatusCode",
    "durationMs",
    "DurationMs",
    "CorrelationId",
    "CallerIPAddress",
    "CallerIpAddress",
    "clientIP_s",
    "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g",
    "identity_claim_oid_g",
    "RequesterObjectId",
    "identity_claim_appid_g",
    "identity_claim_azp_g",
    "RequesterAppId",
    "identity_claim_http_schemas_xmlsoap_org_ws_2005_05_identity_claims_upn_s",
    "identity_claim_upn_s",
    "RequesterUpn",
    "identity_claim_http_schemas_microsoft_com_identity_claims_tenantid_g",
    "identity_claim_tid_g",
    "RequesterTenantId",
    "TenantId",
    "userAgentHeader",
    "clientInfo",
    "clientInfo_s",
    "UserAgentHeader",
    "userAgentHeader_s",
    "TimeGenerated",
    "timeGenerated",
    "id",
    "id_s",
    "requestId",
    "RequestId",
];

// The activity log's properties: `entra::azure_activity` reads only their `eventDataId`.
typed_props!(ActivityProps, activity_names, "an activity log properties object", extra: [], {
    event_data_id: Scalar<'a> = "eventDataId",
});

// A resource log's properties as `resource::from_record` reads them (its other names for the same
// fields are listed so that a key of theirs sends the record to the general path).
typed_props!(ResourceProps, resource_names, "a resource log properties object",
    extra: ["ResultType", "ResultSignature", "httpStatusCode_d", "StatusCode", "clientInfo_s",
            "UserAgentHeader", "userAgentHeader_s", "id_s", "RequestId"], {
    result_type: Scalar<'a> = "resultType",
    status: Scalar<'a> = "status",
    status_text: Scalar<'a> = "statusText",
    result_signature: Scalar<'a> = "resultSignature",
    code: Scalar<'a> = "code",
    status_code: Scalar<'a> = "statusCode",
    http_status_code: Scalar<'a> = "httpStatusCode",
    user_agent_header: Scalar<'a> = "userAgentHeader",
    client_info: Scalar<'a> = "clientInfo",
    id: Scalar<'a> = "id",
    request_id: Scalar<'a> = "requestId",
    request_uri: Scalar<'a> = "requestUri",
});

// The caller's token claims (`identity.claim` of Key Vault, `identity.claims` of the activity
// log). The claim URLs are dotted names: the general path also tries their parts before a dot as
// keys of nested objects, so those parts are names too.
typed_props!(Claims, claims_names, "a claims object",
    extra: ["http://schemas", "http://schemas.microsoft", "http://schemas.xmlsoap"], {
    oid_url: Scalar<'a> = "http://schemas.microsoft.com/identity/claims/objectidentifier",
    oid: Scalar<'a> = "oid",
    appid: Scalar<'a> = "appid",
    azp: Scalar<'a> = "azp",
    upn_url: Scalar<'a> = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    upn: Scalar<'a> = "upn",
    tid_url: Scalar<'a> = "http://schemas.microsoft.com/identity/claims/tenantid",
    tid: Scalar<'a> = "tid",
});

// Storage's `identity.requester`.
typed_props!(Requester, requester_names, "a requester object", extra: [], {
    object_id: Scalar<'a> = "objectId",
    app_id: Scalar<'a> = "appId",
    upn: Scalar<'a> = "upn",
    tenant_id: Scalar<'a> = "tenantId",
});

/// `identity`: its claims (under either name) and requester.
#[derive(Default)]
struct Identity<'a> {
    claim: Option<Nested<Box<Claims<'a>>>>,
    claims: Option<Nested<Box<Claims<'a>>>>,
    requester: Option<Nested<Box<Requester<'a>>>>,
}

/// An object read into a [`Fill`] of `T`, or null. Any other value is a reason to give up.
impl<'de, T: Default> de::Deserialize<'de> for Nested<Box<T>>
where
    for<'r> Fill<'r, T>: de::DeserializeSeed<'de, Value = ()>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Default> Visitor<'de> for V<T>
        where
            for<'r> Fill<'r, T>: de::DeserializeSeed<'de, Value = ()>,
        {
            type Value = Nested<Box<T>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object or null")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Nested::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let mut q = Box::<T>::default();
                de::DeserializeSeed::deserialize(Fill(&mut *q), de::value::MapAccessDeserializer::new(map))?;
                Ok(Nested::Object(q))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de> de::Deserialize<'de> for Nested<Identity<'de>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Nested<Identity<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an identity object or null")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Nested::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Identity::default();
                static NAMES: OnceLock<Vec<u64>> = OnceLock::new();
                let names = NAMES.get_or_init(|| folded(&["claim", "claims", "requester"]));
                while let Some(k) = map.next_key::<&'de str>()? {
                    match k {
                        "claim" => out.claim = Some(map.next_value()?),
                        "claims" => out.claims = Some(map.next_value()?),
                        "requester" => out.requester = Some(map.next_value()?),
                        _ => unknown(&mut map, k, names)?,
                    }
                }
                Ok(Nested::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The object of a nested value read as present and not null.
fn object<T>(v: &Option<Nested<T>>) -> Option<&T> {
    match v {
        Some(Nested::Object(o)) => Some(o),
        _ => None,
    }
}

/// The identity object of a kind that reads it; a skipped one is a reason to give up.
fn identity<'t, 'a>(top: &'t AzureTop<'a>) -> Result<Option<&'t Identity<'a>>, Unsure> {
    if top.identity_skipped {
        return Err(Unsure);
    }
    Ok(object(&top.identity))
}

/// `as_str(get(top, ["resourceId", "workflowId"]))` of `from_diagnostic`, and whether it names an
/// Entra tenant's resource (then the general path may read the record as an audit one).
fn dispatch_resource<'t>(top: &'t AzureTop) -> Result<Option<Cow<'t, str>>, Unsure> {
    let id = first(&[&top.resource_id, &top.workflow_id]).text_cow()?;
    if id.as_deref().is_some_and(|r| r.to_ascii_lowercase().contains("/providers/microsoft.aadiam")) {
        return Err(Unsure);
    }
    Ok(id)
}

/// The category text `from_diagnostic` requires.
fn category<'t>(top: &'t AzureTop) -> Result<Cow<'t, str>, Unsure> {
    top.category.text_cow()?.ok_or(Unsure)
}

/// The text after a path segment equal (ASCII case aside) to `key`.
fn after<'p>(parts: &[&'p str], key: &str) -> Option<&'p str> {
    parts.windows(2).find(|w| w[0].eq_ignore_ascii_case(key)).map(|w| w[1])
}

/// Text, else the fallback (`.or_else`), into a column.
fn text_or(r: &mut CompactRow, i: usize, v: Option<Cow<str>>, fallback: Option<&str>) {
    r.set_opt_str(i, v.as_deref().or(fallback));
}

column_indexes! {
    /// The activity table's columns the typed reader sets, found once.
    ActivityCols, activity_cols, Table::AzureActivity,
    [
        id,
        correlation_id,
        operation_name,
        category,
        result_type,
        result_signature,
        level,
        caller,
        caller_ip,
        caller_app_id,
        resource_id,
        subscription_id,
        resource_group,
        resource_provider,
    ]
}

/// `entra::azure_activity` of a diagnostic-settings record (as `from_diagnostic` hands it over).
fn activity_row(top: &AzureTop, q: &ActivityProps, room: usize) -> Result<CompactMapped, Unsure> {
    let env_category = category(top)?;
    dispatch_resource(top)?;
    let c = activity_cols();
    let mut r = CompactRow::new(Table::AzureActivity, room);
    let id = match first(&[&top.event_data_id, &top.id]).text()? {
        Some(id) => Some(id),
        None => q.event_data_id.text()?,
    };
    r.set_opt_str(c.id, id.as_deref());
    text(&mut r, c.correlation_id, &top.correlation_id)?;
    text(&mut r, c.operation_name, first(&[&top.operation_name_value, &top.operation_name]))?;
    let cat = first(&[&top.category_value, &top.category]).text_cow()?;
    text_or(&mut r, c.category, cat, Some(&env_category));
    text(&mut r, c.result_type, first(&[&top.activity_status_value, &top.result_type]))?;
    text(&mut r, c.result_signature, &top.result_signature)?;
    text(&mut r, c.level, &top.level)?;
    let claims = identity(top)?.and_then(|i| object(&i.claims)).map(|b| &**b);
    let caller = match (top.caller.text_cow()?, claims) {
        (Some(t), _) => Some(t),
        (None, Some(c)) => first(&[&c.upn_url, &c.oid_url]).text_cow()?,
        (None, None) => None,
    };
    r.set_opt_str(c.caller, caller.as_deref());
    r.set_opt_str(c.caller_ip, ip_of(&top.caller_ip)?.as_deref());
    let app = match claims {
        Some(c) => c.appid.text_cow()?,
        None => None,
    };
    r.set_opt_str(c.caller_app_id, app.as_deref());
    let resource_id = top.resource_id.text_cow()?;
    r.set_opt_str(c.resource_id, resource_id.as_deref());
    let parts: Vec<&str> = resource_id.as_deref().unwrap_or("").split('/').collect();
    text_or(&mut r, c.subscription_id, top.subscription_id.text_cow()?, after(&parts, "subscriptions"));
    text_or(&mut r, c.resource_group, top.resource_group.text_cow()?, after(&parts, "resourcegroups"));
    text_or(&mut r, c.resource_provider, top.resource_provider_value.text_cow()?, after(&parts, "providers"));
    let ts = first(&[&top.time, &top.event_timestamp]).time().or_else(|| top.time.time()).ok_or(Unsure)?;
    if !crate::time::in_range(ts) {
        return Err(Unsure);
    }
    Ok(CompactMapped { table: Table::AzureActivity, ts, id, row: r })
}

column_indexes! {
    /// The resource-log table's columns the typed reader sets, found once.
    ResourceCols, resource_cols, Table::ResourceLogs,
    [
        id,
        category,
        operation_name,
        operation_version,
        resource_id,
        resource_provider,
        resource_type,
        resource_name,
        subscription_id,
        resource_group,
        result_type,
        result_signature,
        result_description,
        status_code,
        duration_ms,
        correlation_id,
        caller_ip,
        caller_object_id,
        caller_app_id,
        caller_upn,
        caller_tenant_id,
        user_agent,
    ]
}

/// `resource::from_record` of a diagnostic-settings record (as `from_diagnostic` hands it over).
fn resource_row(top: &AzureTop, q: &ResourceProps, room: usize) -> Result<CompactMapped, Unsure> {
    let category = category(top)?;
    // `from_diagnostic` hands a record of no known category to the resource mapper only when it
    // names its resource.
    if dispatch_resource(top)?.is_none_or(|r| r.is_empty()) {
        return Err(Unsure);
    }
    let c = resource_cols();
    let mut r = CompactRow::new(Table::ResourceLogs, room);
    r.set_str(c.category, &category);
    text(&mut r, c.operation_name, &top.operation_name)?;
    text(&mut r, c.operation_version, &top.operation_version)?;
    let resource_id = first(&[&top.resource_id, &top.workflow_id]).text_cow()?;
    r.set_opt_str(c.resource_id, resource_id.as_deref());
    let parts: Vec<&str> = resource_id.as_deref().unwrap_or("").split('/').filter(|p| !p.is_empty()).collect();
    let provider_at = parts.iter().position(|p| p.eq_ignore_ascii_case("providers"));
    let part = |k: usize| provider_at.and_then(|i| parts.get(i + k)).copied();
    r.set_opt_str(c.resource_provider, part(1));
    r.set_opt_str(c.resource_type, part(2));
    r.set_opt_str(c.resource_name, part(3));
    r.set_opt_str(c.subscription_id, after(&parts, "subscriptions"));
    r.set_opt_str(c.resource_group, after(&parts, "resourcegroups"));
    // `first(&[o, props], names)`: the record's first present name, as text; else the properties'.
    let either = |top_v: &Scalar, props: &[&Scalar]| -> Result<Option<String>, Unsure> {
        match top_v.text()? {
            Some(t) => Ok(Some(t)),
            None => first(props).text(),
        }
    };
    let result_type = either(&top.result_type, &[&q.result_type, &q.status, &q.status_text])?;
    r.set_opt_str(c.result_type, result_type.as_deref());
    let signature = either(&top.result_signature, &[&q.result_signature, &q.status_text, &q.code])?;
    r.set_opt_str(c.result_signature, signature.as_deref());
    text(&mut r, c.result_description, &top.result_description)?;
    r.set_opt_int(c.status_code, first(&[&q.status_code, &q.http_status_code]).int());
    let duration = match top.duration_ms.int() {
        Some(d) => Some(d),
        None => top.duration_ms.text()?.and_then(|s| s.split('.').next()?.parse().ok()),
    };
    r.set_opt_int(c.duration_ms, duration);
    let correlation = top.correlation_id.text()?;
    r.set_opt_str(c.correlation_id, correlation.as_deref());
    r.set_opt_str(c.caller_ip, ip_of(&top.caller_ip)?.as_deref());
    let identity = identity(top)?;
    // `get(identity, ["claim", "claims"])`: the first of the two present and not null.
    let claim = identity.and_then(|i| match (&i.claim, &i.claims) {
        (Some(Nested::Object(c)), _) => Some(&**c),
        (None | Some(Nested::Null), Some(Nested::Object(c))) => Some(&**c),
        _ => None,
    });
    let requester = identity.and_then(|i| object(&i.requester)).map(|b| &**b);
    // The claims' first present name as text, else the requester's, else (the caller's tenant
    // only) the record's `tenantId`.
    let caller = |claims: Option<[&Scalar; 2]>, req: Option<&Scalar>, own: &Scalar| -> Result<Option<String>, Unsure> {
        if let Some(t) = claims.map(|c| first(&c).text()).transpose()?.flatten() {
            return Ok(Some(t));
        }
        if let Some(t) = req.map(Scalar::text).transpose()?.flatten() {
            return Ok(Some(t));
        }
        own.text()
    };
    let no = Scalar::Absent;
    let oid = caller(claim.map(|c| [&c.oid_url, &c.oid]), requester.map(|q| &q.object_id), &no)?;
    r.set_opt_str(c.caller_object_id, oid.as_deref());
    let app = caller(claim.map(|c| [&c.appid, &c.azp]), requester.map(|q| &q.app_id), &no)?;
    r.set_opt_str(c.caller_app_id, app.as_deref());
    let upn = caller(claim.map(|c| [&c.upn_url, &c.upn]), requester.map(|q| &q.upn), &no)?;
    r.set_opt_str(c.caller_upn, upn.as_deref());
    let tenant = caller(claim.map(|c| [&c.tid_url, &c.tid]), requester.map(|q| &q.tenant_id), &top.tenant_id)?;
    r.set_opt_str(c.caller_tenant_id, tenant.as_deref());
    // `first(&[props, o], [userAgentHeader, clientInfo, …])`: the record itself has neither.
    let agent = first(&[&q.user_agent_header, &q.client_info]).text()?;
    r.set_opt_str(c.user_agent, agent.as_deref());
    let ts = top.time.time().ok_or(Unsure)?;
    if !crate::time::in_range(ts) {
        return Err(Unsure);
    }
    // The record's own id (the properties', else its own), else the request URI with the
    // correlation id; without one the general path hashes the whole record.
    let own = match first(&[&q.id, &q.request_id]).text()? {
        Some(id) => Some(id),
        None => top.id.text()?,
    };
    let id = match own {
        Some(id) => id,
        None => match q.request_uri.text()? {
            Some(u) => format!("{u}\u{1f}{}", correlation.as_deref().unwrap_or_default()),
            None => return Err(Unsure),
        },
    };
    r.set_str(c.id, &id);
    let operation = top.operation_name.text()?;
    let dedup = format!("{id}\u{1f}{ts}\u{1f}{category}\u{1f}{}", operation.as_deref().unwrap_or_default());
    Ok(CompactMapped { table: Table::ResourceLogs, ts, id: Some(dedup), row: r })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each envelope key reads into the field its entry names, and the fields one kind reads
    /// that the other's general path would take for a name of its own are found.
    #[test]
    fn envelope_keys_read_their_fields() {
        for (i, (name, field)) in TOP_SCALARS.iter().enumerate() {
            let line = format!("{{\"{name}\":{}}}", i + 1);
            let mut top = AzureTop::default();
            crate::ingest::formats::json::from_str_seed(&line, Fill(&mut top)).unwrap();
            assert!(matches!(field(&top), Scalar::I64(n) if *n == i as i64 + 1), "{name}");
            let set = TOP_SCALARS.iter().filter(|(_, f)| !matches!(f(&top), Scalar::Absent)).count();
            assert_eq!(set, 1, "{name}");
        }
        let clashes = |k: Kind| k.names().1.len();
        assert_eq!((clashes(Kind::Activity), clashes(Kind::Resource)), (0, 2));
    }
}
