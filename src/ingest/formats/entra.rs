//! Entra ID, Azure and Microsoft 365 records → lake rows, for every export format.
//!
//! Longer than 500 lines on purpose: one short mapper per Entra table (sign-ins, audit, risk,
//! Graph activity, Azure activity, O365), each shared by all five export formats through `Env`
//! and the helpers below; splitting them apart would spread one contract over many files.

use super::{Mapped, Reject, RowB};
use crate::ingest::normalize::{as_i64, as_str, b, get, i, ip, nested, s, t, time_of, Indexed};
use crate::lake::Table;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What the envelope around a properties object says (diagnostic settings' top level, ECS's
/// `source.*`/`event.*`), used where the properties are silent.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub category: Option<String>,
    pub time: Option<i64>,
    pub caller_ip: Option<String>,
    pub tenant_id: Option<String>,
    pub operation_name: Option<String>,
    pub result_type: Option<String>,
    pub correlation_id: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub ingested: Option<i64>,
    /// ECS: a source IP that wins over the properties' own.
    pub source_ip: Option<String>,
}

fn sv(o: Option<String>) -> Value {
    o.map(Value::String).unwrap_or(Value::Null)
}

fn or(v: Value, fallback: Option<&String>) -> Value {
    if v.is_null() {
        fallback.cloned().map(Value::String).unwrap_or(Value::Null)
    } else {
        v
    }
}

/// Where a row's source address may come from, tried in the order given.
enum IpFrom<'a> {
    /// ECS `source.ip` / `client.ip` (already normalized).
    Ecs,
    /// The envelope's `callerIpAddress`.
    Caller,
    /// A field of a properties object.
    Field(&'a Map<String, Value>, &'a str),
}

/// The first of `order` that holds a parsable address, normalized; Null when none does.
fn source_ip(env: &Env, order: &[IpFrom]) -> Value {
    for from in order {
        let found = match from {
            IpFrom::Ecs => env.source_ip.clone(),
            IpFrom::Caller => env.caller_ip.as_deref().and_then(wisp_udfs::ip::normalize),
            IpFrom::Field(obj, key) => ip(get(*obj, &[key])),
        };
        if found.is_some() {
            return sv(found);
        }
    }
    Value::Null
}

/// Risk-detection fields shared by service principal and user risk events: (column, property).
const RISK_FIELDS: [(&str, &str); 7] = [
    ("risk_event_type", "riskEventType"),
    ("risk_level", "riskLevel"),
    ("risk_state", "riskState"),
    ("risk_detail", "riskDetail"),
    ("detection_timing_type", "detectionTimingType"),
    ("activity", "activity"),
    ("source", "source"),
];

/// Copies text properties into columns.
fn copy_strs(r: &mut RowB, p: &Map<String, Value>, fields: &[(&str, &str)]) {
    for (col, key) in fields {
        r.set(col, s(p, &[key]));
    }
}

pub(super) const SIGNIN_CATEGORIES: [&str; 4] =
    ["ServicePrincipalSignInLogs", "ManagedIdentitySignInLogs", "SignInLogs", "NonInteractiveUserSignInLogs"];

const ACTIVITY_CATEGORIES: [&str; 9] = [
    "Administrative",
    "Action",
    "Security",
    "ServiceHealth",
    "Alert",
    "Recommendation",
    "Policy",
    "Autoscale",
    "ResourceHealth",
];

/// Table of a diagnostic-settings / ECS category.
pub(super) fn table_of_category(cat: &str) -> Option<Table> {
    if SIGNIN_CATEGORIES.iter().any(|c| c.eq_ignore_ascii_case(cat)) {
        return Some(Table::Signins);
    }
    match cat.to_ascii_lowercase().as_str() {
        "auditlogs" => Some(Table::Audit),
        "serviceprincipalriskevents" => Some(Table::SpRiskEvents),
        "userriskevents" | "riskyusers" | "riskyserviceprincipals" => Some(Table::UserRisk),
        "microsoftgraphactivitylogs" => Some(Table::GraphActivity),
        _ if ACTIVITY_CATEGORIES.iter().any(|c| c.eq_ignore_ascii_case(cat)) => Some(Table::AzureActivity),
        _ => None,
    }
}

pub(super) fn canonical_signin_category(cat: &str) -> String {
    canonical_signin_category_of(cat).to_string()
}

/// [`canonical_signin_category`] without a copy.
pub(super) fn canonical_signin_category_of(cat: &str) -> &str {
    SIGNIN_CATEGORIES.iter().find(|c| c.eq_ignore_ascii_case(cat)).copied().unwrap_or(cat)
}

// -------------------------------------------------------------------------------------------
// Formats

/// Azure Monitor diagnostic settings: `{time, category, properties: {…}, callerIpAddress, …}`.
pub fn from_diagnostic(top: &Map<String, Value>) -> Result<Mapped, Reject> {
    let category = as_str(get(top, &["category"])).ok_or("diagnostic record without 'category'")?;
    let resource_id = as_str(get(top, &["resourceId", "workflowId"])).unwrap_or_default();
    // Entra audit records as some exports write them: the audit category (ApplicationManagement,
    // DirectoryManagement, …) at the top, a Microsoft.aadiam resource id.
    let aadiam = resource_id.to_ascii_lowercase().contains("/providers/microsoft.aadiam");
    let table = match table_of_category(&category) {
        Some(t) if !(aadiam && t == Table::AzureActivity) => t,
        _ if aadiam && nested(top, &["properties"]).is_some_and(|p| p.get("activityDisplayName").is_some()) => {
            Table::Audit
        }
        // Any other resource's logs (Key Vault, Storage, Logic Apps, …).
        _ if !resource_id.is_empty() => return super::resource::from_record(top),
        _ => return Err(format!("unknown category '{category}' (and no resourceId: not a resource log)")),
    };
    let env = Env {
        category: Some(category.clone()),
        time: time_of(get(top, &["time"])),
        caller_ip: as_str(get(top, &["callerIpAddress"])),
        tenant_id: as_str(get(top, &["tenantId"])),
        operation_name: as_str(get(top, &["operationName"])),
        result_type: as_str(get(top, &["resultType"])),
        correlation_id: as_str(get(top, &["correlationId"])),
        ..Env::default()
    };
    if table == Table::AzureActivity {
        return azure_activity(top, &env);
    }
    let empty = Map::new();
    let props = match get(top, &["properties"]) {
        Some(Value::Object(p)) => Cow::Borrowed(p),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(p)) => Cow::Owned(p),
            _ => return Err("'properties' is a string that is not a JSON object".into()),
        },
        _ => Cow::Borrowed(&empty),
    };
    by_table(table, &props, &env)
}

fn by_table(table: Table, props: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    match table {
        Table::Signins => signin(props, env),
        Table::Audit => audit(props, env),
        Table::SpRiskEvents => sp_risk(props, env),
        Table::UserRisk => user_risk(props, env),
        Table::GraphActivity => graph_activity(props, env),
        Table::AzureActivity => azure_activity(props, env),
        Table::O365Audit => from_o365(props, env),
        Table::NetworkAlerts => Err("network alerts are not an Entra format".into()),
        Table::ResourceLogs => super::resource::from_record(props),
    }
}

/// Log Analytics / Sentinel exports: PascalCase columns, nested columns as JSON strings; the
/// `Type` column (or the column set) tells the table.
pub fn from_log_analytics(row: &Map<String, Value>) -> Result<Mapped, Reject> {
    // `Type` names the table; when it names none we know (some exports let a projected column
    // overwrite it), the column set decides.
    let ty = as_str(get(row, &["Type"])).filter(|t| LA_TABLES.contains(&t.as_str()));
    let table_name = ty.or_else(|| guess_la_table(row)).ok_or_else(|| match as_str(get(row, &["Type"])) {
        Some(t) => format!("unknown Log Analytics table '{t}'"),
        None => "Log Analytics record without a 'Type' column and with an unknown column set".to_string(),
    })?;
    let (table, category) = match table_name.as_str() {
        "AADServicePrincipalSignInLogs" => (Table::Signins, Some("ServicePrincipalSignInLogs")),
        "AADManagedIdentitySignInLogs" => (Table::Signins, Some("ManagedIdentitySignInLogs")),
        "SigninLogs" => (Table::Signins, Some("SignInLogs")),
        "AADNonInteractiveUserSignInLogs" => (Table::Signins, Some("NonInteractiveUserSignInLogs")),
        "AuditLogs" => (Table::Audit, None),
        "AADServicePrincipalRiskEvents" => (Table::SpRiskEvents, None),
        "AADUserRiskEvents" | "AADRiskyUsers" => (Table::UserRisk, None),
        "MicrosoftGraphActivityLogs" => (Table::GraphActivity, None),
        "OfficeActivity" => (Table::O365Audit, None),
        "AzureActivity" => (Table::AzureActivity, None),
        "AzureDiagnostics" | "StorageBlobLogs" | "StorageFileLogs" | "StorageQueueLogs" | "StorageTableLogs" => {
            return super::resource::from_record(row)
        }
        other => return Err(format!("unknown Log Analytics table '{other}'")),
    };
    let env = Env {
        category: category.map(str::to_string).or_else(|| as_str(get(row, &["Category"]))),
        time: time_of(get(row, &["TimeGenerated"])),
        tenant_id: as_str(get(row, &["TenantId", "AADTenantId"])),
        operation_name: as_str(get(row, &["OperationName"])),
        result_type: as_str(get(row, &["ResultType"])),
        correlation_id: as_str(get(row, &["CorrelationId"])),
        caller_ip: as_str(get(row, &["CallerIpAddress"])),
        ..Env::default()
    };
    if table == Table::UserRisk && table_name == "AADRiskyUsers" {
        let mut env = env;
        env.category = Some("RiskyUsers".into());
        return by_table(table, row, &env);
    }
    if table == Table::UserRisk {
        let mut env = env;
        env.category = Some("UserRiskEvents".into());
        return by_table(table, row, &env);
    }
    by_table(table, row, &env)
}

const LA_TABLES: [&str; 16] = [
    "AzureDiagnostics",
    "StorageBlobLogs",
    "StorageFileLogs",
    "StorageQueueLogs",
    "StorageTableLogs",
    "AADServicePrincipalSignInLogs",
    "AADManagedIdentitySignInLogs",
    "SigninLogs",
    "AADNonInteractiveUserSignInLogs",
    "AuditLogs",
    "AADServicePrincipalRiskEvents",
    "AADUserRiskEvents",
    "AADRiskyUsers",
    "MicrosoftGraphActivityLogs",
    "OfficeActivity",
    "AzureActivity",
];

fn guess_la_table(row: &Map<String, Value>) -> Option<String> {
    let has = |k: &str| get(row, &[k]).is_some();
    let t = if has("ServicePrincipalId") && has("ResultType") && !has("UserPrincipalName") {
        "AADServicePrincipalSignInLogs"
    } else if has("UserPrincipalName") && has("ResultType") && has("AppDisplayName") {
        "SigninLogs"
    } else if has("InitiatedBy") && has("TargetResources") {
        "AuditLogs"
    } else if has("RiskEventType") && has("ServicePrincipalId") {
        "AADServicePrincipalRiskEvents"
    } else if has("RequestUri") && has("RequestMethod") {
        "MicrosoftGraphActivityLogs"
    } else if has("OfficeWorkload") {
        "OfficeActivity"
    } else if has("OperationNameValue") || has("CallerIpAddress") {
        "AzureActivity"
    } else {
        return None;
    };
    Some(t.to_string())
}

/// Microsoft Graph API objects (one element of `value[]`).
pub fn from_graph(obj: &Map<String, Value>) -> Result<Mapped, Reject> {
    let has = |k: &str| obj.contains_key(k);
    let odata = as_str(get(obj, &["@odata.type"])).unwrap_or_default();
    let env = Env::default();
    if odata.ends_with("servicePrincipalRiskDetection") || (has("riskEventType") && has("servicePrincipalId")) {
        return sp_risk(obj, &env);
    }
    if odata.ends_with("riskDetection") || odata.ends_with("riskyUser") || (has("riskEventType") && has("userId")) {
        let mut env = env;
        env.category = Some(if odata.ends_with("riskyUser") { "RiskyUsers" } else { "UserRiskEvents" }.into());
        return user_risk(obj, &env);
    }
    if has("activityDisplayName") || has("initiatedBy") {
        return audit(obj, &env);
    }
    if has("createdDateTime") && (has("appId") || has("status")) {
        return signin(obj, &env);
    }
    Err("unrecognized Microsoft Graph object (expected a signIn, directoryAudit or servicePrincipalRiskDetection)"
        .into())
}

/// Elastic ECS documents from `logs-azure.*` and `logs-o365.audit-*`.
pub fn from_ecs(doc: &Map<String, Value>) -> Result<Mapped, Reject> {
    let env = Env {
        time: time_of(get(doc, &["@timestamp"])),
        source_ip: ip(get(doc, &["source.ip", "client.ip"])),
        asn: as_i64(get(doc, &["source.as.number"])),
        as_org: as_str(get(doc, &["source.as.organization.name"])),
        country: as_str(get(doc, &["source.geo.country_iso_code", "geo.country_iso_code"])),
        city: as_str(get(doc, &["source.geo.city_name", "geo.city_name"])),
        ingested: time_of(get(doc, &["event.ingested"])),
        tenant_id: as_str(get(doc, &["azure.tenant_id"])),
        correlation_id: as_str(get(doc, &["azure.correlation_id"])),
        ..Env::default()
    };
    // The lossless path: Elastic kept the original record.
    if let Some(orig) = as_str(get(doc, &["event.original"])) {
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&orig) {
            let inner = match super::detect(&o) {
                Some(super::Format::Diagnostic) => from_diagnostic(&o),
                Some(super::Format::O365) => from_o365(&o, &Env::default()),
                Some(super::Format::LogAnalytics) => from_log_analytics(&o),
                Some(super::Format::Graph) => from_graph(&o),
                _ => Err(String::new()),
            };
            if let Ok(mut m) = inner {
                apply_ecs(&mut m, &env);
                return Ok(m);
            }
        }
    }
    let sections: [(&str, Table); 5] = [
        ("azure.signinlogs", Table::Signins),
        ("azure.auditlogs", Table::Audit),
        ("azure.graphactivitylogs", Table::GraphActivity),
        ("azure.activitylogs", Table::AzureActivity),
        ("o365.audit", Table::O365Audit),
    ];
    for (path, table) in sections {
        let Some(Value::Object(sec)) = get(doc, &[path]) else {
            continue;
        };
        let mut env = env.clone();
        env.category = as_str(get(sec, &["category"]));
        env.operation_name = as_str(get(sec, &["operation_name"]));
        env.result_type = as_str(get(sec, &["result_type"]));
        env.caller_ip = env.source_ip.clone();
        let mut m = if table == Table::O365Audit || table == Table::AzureActivity {
            by_table(table, sec, &env)?
        } else {
            let empty = Map::new();
            let props = match get(sec, &["properties"]) {
                Some(Value::Object(p)) => p,
                _ => &empty,
            };
            by_table(table, props, &env)?
        };
        apply_ecs(&mut m, &env);
        return Ok(m);
    }
    Err("ECS document with no azure.signinlogs / auditlogs / graphactivitylogs / activitylogs or o365.audit section and no usable event.original".into())
}

fn apply_ecs(m: &mut Mapped, env: &Env) {
    m.ingested_at = env.ingested;
    let mut r = RowB::of(m.table, std::mem::take(&mut m.row));
    let has = |c: &str| m.table.col(c).is_some();
    if has("source_asn") && r.get("source_asn").is_null() {
        if let Some(n) = env.asn {
            r.set("source_asn", Value::from(n));
            r.set("source_as_org", sv(env.as_org.clone()));
        }
    }
    if has("source_ip") && r.get("source_ip").is_null() {
        r.set("source_ip", sv(env.source_ip.clone()));
    }
    m.row = r.vals;
}

// -------------------------------------------------------------------------------------------
// Tables

fn finish(r: RowB, ts: Option<i64>, dedup_id: Option<String>, what: &str) -> Result<Mapped, Reject> {
    let ts = ts.ok_or_else(|| format!("missing or unparsable timestamp ({what})"))?;
    Ok(Mapped { table: r.table, ts, dedup_id, row: r.vals, ingested_at: None })
}

fn signin(p: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    let ix = Indexed::new(p);
    let q = &ix;
    let mut r = RowB::new(Table::Signins);
    let category = env.category.clone().map(|c| canonical_signin_category(&c)).or_else(|| graph_signin_category(p));
    r.set("category", sv(category));
    let id = as_str(get(q, &["id"]));
    r.set("id", sv(id.clone()));
    r.set("tenant_id", or(s(q, &["tenantId", "resourceTenantId"]), env.tenant_id.as_ref()));
    r.set("correlation_id", or(s(q, &["correlationId"]), env.correlation_id.as_ref()));
    r.set("unique_token_id", s(q, &["uniqueTokenIdentifier"]));
    r.set("service_principal_id", s(q, &["servicePrincipalId"]));
    r.set("service_principal_name", s(q, &["servicePrincipalName"]));
    r.set("app_id", s(q, &["appId"]));
    r.set("app_display_name", s(q, &["appDisplayName"]));
    r.set("app_owner_tenant_id", s(q, &["appOwnerTenantId"]));
    r.set("user_id", s(q, &["userId"]));
    r.set("user_principal_name", s(q, &["userPrincipalName"]));
    r.set("resource_id", s(q, &["resourceIdentity", "resourceId"]));
    r.set("resource_display_name", s(q, &["resourceDisplayName"]));
    r.set("resource_tenant_id", s(q, &["resourceTenantId"]));
    r.set("home_tenant_id", s(q, &["homeTenantId"]));
    r.set("source_ip", source_ip(env, &[IpFrom::Ecs, IpFrom::Field(p, "ipAddress"), IpFrom::Caller]));
    r.set("source_asn", i(q, &["autonomousSystemNumber"]));
    let loc = nested(q, &["location", "locationDetails"]);
    let loc_obj = loc.as_deref().and_then(Value::as_object);
    let country = loc_obj.and_then(|l| as_str(get(l, &["countryOrRegion"]))).or_else(|| env.country.clone());
    let city = loc_obj.and_then(|l| as_str(get(l, &["city"]))).or_else(|| env.city.clone());
    r.set("country", sv(country));
    r.set("city", sv(city));
    let code = as_i64(get(q, &["status.errorCode", "resultType"]))
        .or_else(|| env.result_type.as_deref().and_then(|s| s.trim().parse().ok()));
    r.set("error_code", code.map(Value::from).unwrap_or(Value::Null));
    r.set("failure_reason", s(q, &["status.failureReason", "resultDescription"]));
    r.set("client_credential_type", s(q, &["clientCredentialType"]));
    r.set("credential_key_id", s(q, &["servicePrincipalCredentialKeyId"]));
    r.set("user_agent", s(q, &["userAgent"]));
    r.set("is_interactive", b(q, &["isInteractive"]));
    r.set("operation_name", sv(env.operation_name.clone().or_else(|| Some("Sign-in activity".into()))));
    let ts = time_of(get(q, &["createdDateTime", "created_at"])).or(env.time);
    finish(r, ts, id, "createdDateTime / TimeGenerated / time")
}

fn graph_signin_category(p: &Map<String, Value>) -> Option<String> {
    if let Some(Value::Array(types)) = get(p, &["signInEventTypes"]) {
        for t in types.iter().filter_map(Value::as_str) {
            let c = match t {
                "servicePrincipal" => "ServicePrincipalSignInLogs",
                "managedIdentity" => "ManagedIdentitySignInLogs",
                "interactiveUser" => "SignInLogs",
                "nonInteractiveUser" => "NonInteractiveUserSignInLogs",
                _ => continue,
            };
            return Some(c.into());
        }
    }
    let has_user = as_str(get(p, &["userId"])).is_some();
    Some(
        if !has_user && as_str(get(p, &["servicePrincipalId"])).is_some() {
            "ServicePrincipalSignInLogs"
        } else if get(p, &["isInteractive"]).and_then(Value::as_bool) == Some(false) {
            "NonInteractiveUserSignInLogs"
        } else {
            "SignInLogs"
        }
        .into(),
    )
}

fn list_of_objects(v: Option<Cow<'_, Value>>) -> Vec<Map<String, Value>> {
    match v.as_deref() {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_object().cloned()).collect(),
        // ECS flattens arrays of objects into objects keyed "0", "1", …
        Some(Value::Object(o)) if o.keys().all(|k| k.bytes().all(|c| c.is_ascii_digit())) => {
            let mut v: Vec<(usize, Map<String, Value>)> =
                o.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.as_object()?.clone()))).collect();
            v.sort_by_key(|(k, _)| *k);
            v.into_iter().map(|(_, m)| m).collect()
        }
        Some(Value::Object(o)) => vec![o.clone()],
        _ => Vec::new(),
    }
}

fn audit(p: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    let mut r = RowB::new(Table::Audit);
    let id = as_str(get(p, &["id"]));
    r.set("id", sv(id.clone()));
    r.set("tenant_id", or(s(p, &["tenantId"]), env.tenant_id.as_ref()));
    r.set("correlation_id", or(s(p, &["correlationId"]), env.correlation_id.as_ref()));
    r.set("category", s(p, &["category"]));
    r.set("operation_name", or(s(p, &["activityDisplayName", "operationName"]), env.operation_name.as_ref()));
    r.set("operation_type", s(p, &["operationType", "AADOperationType"]));
    r.set("result", s(p, &["result"]));
    r.set("result_reason", s(p, &["resultReason", "resultDescription"]));
    r.set("logged_by_service", s(p, &["loggedByService"]));
    let init = nested(p, &["initiatedBy"]);
    let init = init.as_deref().and_then(Value::as_object);
    let user = init.and_then(|o| get(o, &["user"])).and_then(Value::as_object);
    let app = init.and_then(|o| get(o, &["app"])).and_then(Value::as_object);
    let empty = Map::new();
    let (u, a) = (user.unwrap_or(&empty), app.unwrap_or(&empty));
    r.set("initiated_by_user_id", s(u, &["id"]));
    r.set("initiated_by_upn", s(u, &["userPrincipalName"]));
    r.set("initiated_by_app_id", s(a, &["appId"]));
    r.set("initiated_by_app_name", s(a, &["displayName"]));
    r.set("initiated_by_sp_id", s(a, &["servicePrincipalId"]));
    r.set("initiated_by_sp_name", s(a, &["servicePrincipalName"]));
    let order = [IpFrom::Caller, IpFrom::Field(u, "ipAddress"), IpFrom::Field(a, "ipAddress"), IpFrom::Ecs];
    r.set("source_ip", source_ip(env, &order));
    let details = list_of_objects(nested(p, &["additionalDetails"]));
    let mut ua = as_str(get(p, &["userAgent"]));
    let details: Vec<Value> = details
        .iter()
        .map(|d| {
            let k = as_str(get(d, &["key"]));
            let v = as_str(get(d, &["value"]));
            if ua.is_none() && k.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("User-Agent")) {
                ua = v.clone();
            }
            serde_json::json!({"key": k, "value": v})
        })
        .collect();
    r.set("user_agent", sv(ua));
    let targets: Vec<Value> = list_of_objects(nested(p, &["targetResources"]))
        .iter()
        .map(|t| {
            let mods: Vec<Value> = list_of_objects(nested(t, &["modifiedProperties"]))
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "name": as_str(get(m, &["displayName", "name"])),
                        "old_value": as_str(get(m, &["oldValue"])),
                        "new_value": as_str(get(m, &["newValue"])),
                    })
                })
                .collect();
            serde_json::json!({
                "id": as_str(get(t, &["id"])),
                "display_name": as_str(get(t, &["displayName"])),
                "type": as_str(get(t, &["type"])),
                "user_principal_name": as_str(get(t, &["userPrincipalName"])),
                "modified_properties": mods,
            })
        })
        .collect();
    if let Some(first) = targets.first() {
        r.set("target_id", first["id"].clone());
        r.set("target_name", first["display_name"].clone());
        r.set("target_type", first["type"].clone());
    }
    r.set("targets", Value::Array(targets));
    r.set("additional_details", Value::Array(details));
    let ts = time_of(get(p, &["activityDateTime"])).or(env.time);
    finish(r, ts, id, "activityDateTime / TimeGenerated / time")
}

fn location(p: &Map<String, Value>) -> (Option<String>, Option<String>) {
    let loc = nested(p, &["location"]);
    let o = loc.as_deref().and_then(Value::as_object);
    (o.and_then(|l| as_str(get(l, &["countryOrRegion"]))), o.and_then(|l| as_str(get(l, &["city"]))))
}

fn sp_risk(p: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    let mut r = RowB::new(Table::SpRiskEvents);
    let id = as_str(get(p, &["id"]));
    r.set("id", sv(id.clone()));
    r.set("request_id", s(p, &["requestId"]));
    r.set("correlation_id", s(p, &["correlationId"]));
    r.set("service_principal_id", s(p, &["servicePrincipalId"]));
    r.set("service_principal_name", s(p, &["servicePrincipalDisplayName", "servicePrincipalName"]));
    r.set("app_id", s(p, &["appId"]));
    r.set("tenant_id", sv(env.tenant_id.clone()));
    copy_strs(&mut r, p, &RISK_FIELDS);
    r.set("token_issuer_type", s(p, &["tokenIssuerType"]));
    r.set("activity_time", t(p, &["activityDateTime"]));
    let last = time_of(get(p, &["lastUpdatedDateTime"]));
    r.set("last_updated", last.map(Value::from).unwrap_or(Value::Null));
    r.set("source_ip", source_ip(env, &[IpFrom::Field(p, "ipAddress"), IpFrom::Caller]));
    let (country, city) = location(p);
    r.set("country", sv(country));
    r.set("city", sv(city));
    let keys: Vec<Value> = match nested(p, &["keyIds"]).as_deref() {
        Some(Value::Array(a)) => a.iter().filter_map(|k| as_str(Some(k))).map(Value::String).collect(),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        _ => Vec::new(),
    };
    r.set("key_ids", Value::Array(keys));
    r.set(
        "additional_info",
        match get(p, &["additionalInfo"]) {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(v) => Value::String(v.to_string()),
            None => Value::Null,
        },
    );
    let ts = time_of(get(p, &["detectedDateTime"])).or(env.time);
    // Rows are versions: the same detection re-sent with a new state is a new row.
    let dedup = id.map(|i| {
        format!(
            "{i}\u{1f}{}\u{1f}{}",
            last.unwrap_or_default(),
            as_str(get(p, &["servicePrincipalId"])).unwrap_or_default()
        )
    });
    finish(r, ts, dedup, "detectedDateTime")
}

fn user_risk(p: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    let mut r = RowB::new(Table::UserRisk);
    let category = env.category.clone().unwrap_or_else(|| "UserRiskEvents".into());
    r.set("category", Value::String(category.clone()));
    let id = as_str(get(p, &["id"]));
    r.set("id", sv(id.clone()));
    r.set("tenant_id", sv(env.tenant_id.clone()));
    let risky_user = category.eq_ignore_ascii_case("RiskyUsers");
    r.set("user_id", if risky_user { sv(id.clone()) } else { s(p, &["userId"]) });
    r.set("user_principal_name", s(p, &["userPrincipalName"]));
    r.set("user_display_name", s(p, &["userDisplayName"]));
    copy_strs(&mut r, p, &RISK_FIELDS);
    r.set("source_ip", source_ip(env, &[IpFrom::Field(p, "ipAddress"), IpFrom::Caller]));
    let (country, city) = location(p);
    r.set("country", sv(country));
    r.set("city", sv(city));
    let last = time_of(get(p, &["lastUpdatedDateTime", "riskLastUpdatedDateTime"]));
    r.set("last_updated", last.map(Value::from).unwrap_or(Value::Null));
    let ts = time_of(get(p, &["detectedDateTime", "riskLastUpdatedDateTime"])).or(env.time);
    let dedup = id.map(|i| format!("{category}\u{1f}{i}\u{1f}{}", last.unwrap_or_default()));
    finish(r, ts, dedup, "detectedDateTime / riskLastUpdatedDateTime / time")
}

fn join_list(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Array(a)) => Value::String(a.iter().filter_map(|x| as_str(Some(x))).collect::<Vec<_>>().join(" ")),
        other => sv(as_str(other)),
    }
}

fn graph_activity(p: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    let ix = Indexed::new(p);
    let q = &ix;
    let mut r = RowB::new(Table::GraphActivity);
    let id = as_str(get(q, &["requestId", "id"]));
    r.set("id", sv(id.clone()));
    r.set("operation_id", s(q, &["operationId"]));
    r.set("tenant_id", or(s(q, &["tenantId"]), env.tenant_id.as_ref()));
    r.set("app_id", s(q, &["appId"]));
    r.set("service_principal_id", s(q, &["servicePrincipalId"]));
    r.set("user_id", s(q, &["userId"]));
    r.set("source_ip", source_ip(env, &[IpFrom::Ecs, IpFrom::Field(p, "ipAddress"), IpFrom::Caller]));
    r.set("request_method", s(q, &["requestMethod"]));
    r.set("request_uri", s(q, &["requestUri"]));
    r.set("sign_in_activity_id", s(q, &["signInActivityId"]));
    r.set("roles", join_list(get(q, &["roles"])));
    r.set("scopes", join_list(get(q, &["scopes"])));
    r.set("wids", join_list(get(q, &["wids"])));
    r.set("user_agent", s(q, &["userAgent"]));
    r.set("response_size_bytes", i(q, &["responseSizeBytes"]));
    r.set("duration_ms", i(q, &["durationMs"]));
    r.set("response_status_code", i(q, &["responseStatusCode"]));
    r.set("client_auth_method", i(q, &["clientAuthMethod"]));
    let ts = time_of(get(q, &["timeGenerated", "time_generated"])).or(env.time);
    finish(r, ts, id, "timeGenerated / time")
}

fn azure_activity(p: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    let mut r = RowB::new(Table::AzureActivity);
    let props = nested(p, &["properties"]);
    let props = props.as_deref().and_then(Value::as_object);
    let empty = Map::new();
    let pr = props.unwrap_or(&empty);
    let id = as_str(get(p, &["eventDataId", "id"])).or_else(|| as_str(get(pr, &["eventDataId"])));
    r.set("id", sv(id.clone()));
    r.set("correlation_id", s(p, &["correlationId"]));
    r.set("operation_name", s(p, &["operationNameValue", "operationName"]));
    r.set("category", or(s(p, &["categoryValue", "category"]), env.category.as_ref()));
    r.set("result_type", s(p, &["activityStatusValue", "resultType"]));
    r.set("result_signature", s(p, &["resultSignature"]));
    r.set("level", s(p, &["level"]));
    let identity = nested(p, &["identity"]);
    let claims =
        identity.as_deref().and_then(Value::as_object).and_then(|o| get(o, &["claims"])).and_then(Value::as_object);
    let claim = |names: &[&str]| claims.and_then(|c| as_str(get(c, names)));
    let caller = as_str(get(p, &["caller"])).or_else(|| {
        claim(&[
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
            "http://schemas.microsoft.com/identity/claims/objectidentifier",
        ])
    });
    r.set("caller", sv(caller));
    r.set("caller_ip", sv(ip(get(p, &["callerIpAddress"]))));
    r.set("caller_app_id", sv(claim(&["appid"]).or_else(|| as_str(get(p, &["claims.appid"])))));
    let resource_id = as_str(get(p, &["resourceId", "_ResourceId"]));
    r.set("resource_id", sv(resource_id.clone()));
    let parts: Vec<&str> = resource_id.as_deref().unwrap_or("").split('/').collect();
    let after = |key: &str| parts.windows(2).find(|w| w[0].eq_ignore_ascii_case(key)).map(|w| w[1].to_string());
    r.set("subscription_id", sv(as_str(get(p, &["subscriptionId"])).or_else(|| after("subscriptions"))));
    r.set("resource_group", sv(as_str(get(p, &["resourceGroup"])).or_else(|| after("resourcegroups"))));
    r.set("resource_provider", sv(as_str(get(p, &["resourceProviderValue"])).or_else(|| after("providers"))));
    let ts = time_of(get(p, &["time", "eventTimestamp"])).or(env.time);
    finish(r, ts, id, "time / TimeGenerated")
}

/// Office 365 Management Activity records (and Log Analytics `OfficeActivity`, ECS `o365.audit`).
pub fn from_o365(p: &Map<String, Value>, env: &Env) -> Result<Mapped, Reject> {
    let mut r = RowB::new(Table::O365Audit);
    let id = as_str(get(p, &["Id", "OfficeId"]));
    r.set("id", sv(id.clone()));
    r.set("organization_id", s(p, &["OrganizationId"]));
    r.set("record_type", s(p, &["RecordType"]));
    r.set("workload", s(p, &["Workload", "OfficeWorkload"]));
    r.set("operation", s(p, &["Operation"]));
    let status = as_str(get(p, &["ResultStatus"]));
    r.set("result_status", sv(status.clone()));
    r.set("user_id", s(p, &["UserId"]));
    r.set("user_type", s(p, &["UserType"]));
    r.set("app_id", s(p, &["ApplicationId", "AppId"]));
    r.set("client_app_id", s(p, &["ClientAppId"]));
    let order = [
        IpFrom::Ecs,
        IpFrom::Field(p, "ClientIP"),
        IpFrom::Field(p, "ClientIPAddress"),
        IpFrom::Field(p, "ActorIpAddress"),
    ];
    r.set("source_ip", source_ip(env, &order));
    let props = list_of_objects(nested(p, &["ExtendedProperties"]));
    let mut category = None;
    let mut status_detail = None;
    let props: Vec<Value> = props
        .iter()
        .map(|kv| {
            let name = as_str(get(kv, &["Name"]));
            let value = as_str(get(kv, &["Value"]));
            match name.as_deref() {
                Some("extendedAuditEventCategory") => category = value.clone(),
                Some("ResultStatusDetail") | Some("resultType") => status_detail = value.clone(),
                _ => {}
            }
            serde_json::json!({"name": name, "value": value})
        })
        .collect();
    r.set("extended_audit_event_category", sv(category));
    r.set("extended_properties", Value::Array(props));
    let outcome = status.as_deref().or(status_detail.as_deref()).and_then(|s| match s.to_ascii_lowercase().as_str() {
        "succeeded" | "success" | "true" | "partiallysucceeded" => Some("success"),
        "failed" | "failure" | "false" => Some("failure"),
        _ => None,
    });
    r.set("outcome", sv(outcome.map(str::to_string)));
    let ts = time_of(get(p, &["CreationTime", "TimeGenerated"])).or(env.time);
    finish(r, ts, id, "CreationTime")
}
