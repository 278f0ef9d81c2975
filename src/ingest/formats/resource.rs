//! Azure resource logs → `resource_logs`: any diagnostic-settings record of an Azure resource (Key
//! Vault `AuditEvent`, Storage `StorageRead`/`StorageWrite`/`StorageDelete`, Logic Apps
//! `WorkflowRuntime`, …) and the Log Analytics `AzureDiagnostics` / `Storage*Logs` exports with their
//! flattened columns (`identity_claim_…_g`, `properties_…`, `…_s`, `…_d`).

use super::{Mapped, Reject, RowB};
use crate::ingest::normalize::{as_i64, as_str, fnv64, get, ip, nested, time_of};
use crate::lake::Table;
use serde_json::{Map, Value};

const OID: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";
const TID: &str = "http://schemas.microsoft.com/identity/claims/tenantid";
const UPN: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";

fn sv(o: Option<String>) -> Value {
    o.map(Value::String).unwrap_or(Value::Null)
}

/// The first present value among several objects and keys.
fn first(objs: &[Option<&Map<String, Value>>], keys: &[&str]) -> Option<String> {
    objs.iter().flatten().find_map(|o| as_str(get(*o, keys)))
}

/// Maps one resource-log record (`obj` is the record; `props` its properties object, if any).
pub fn from_record(obj: &Map<String, Value>) -> Result<Mapped, Reject> {
    let props = nested(obj, &["properties"]);
    let props = props.as_deref().and_then(Value::as_object);
    let identity = nested(obj, &["identity"]);
    let identity = identity.as_deref().and_then(Value::as_object);
    let claim = identity.and_then(|i| get(i, &["claim", "claims"])).and_then(Value::as_object);
    let requester = identity.and_then(|i| get(i, &["requester"])).and_then(Value::as_object);
    let mut r = RowB::new(Table::ResourceLogs);
    let o = Some(obj);
    let category = first(&[o], &["category", "Category"]);
    r.set("category", sv(category.clone()));
    r.set("operation_name", sv(first(&[o], &["operationName", "OperationName"])));
    r.set("operation_version", sv(first(&[o], &["operationVersion", "OperationVersion"])));
    let resource_id = first(&[o], &["resourceId", "ResourceId", "_ResourceId", "workflowId"]);
    r.set("resource_id", sv(resource_id.clone()));
    let parts: Vec<&str> = resource_id.as_deref().unwrap_or("").split('/').filter(|p| !p.is_empty()).collect();
    let after = |key: &str| parts.windows(2).find(|w| w[0].eq_ignore_ascii_case(key)).map(|w| w[1].to_string());
    let provider_at = parts.iter().position(|p| p.eq_ignore_ascii_case("providers"));
    let provider = first(&[o], &["ResourceProvider"])
        .or_else(|| provider_at.and_then(|i| parts.get(i + 1)).map(|s| s.to_string()));
    let rtype =
        first(&[o], &["ResourceType"]).or_else(|| provider_at.and_then(|i| parts.get(i + 2)).map(|s| s.to_string()));
    let rname =
        first(&[o], &["Resource"]).or_else(|| provider_at.and_then(|i| parts.get(i + 3)).map(|s| s.to_string()));
    r.set("resource_provider", sv(provider));
    r.set("resource_type", sv(rtype));
    r.set("resource_name", sv(rname));
    r.set("subscription_id", sv(first(&[o], &["SubscriptionId"]).or_else(|| after("subscriptions"))));
    r.set("resource_group", sv(first(&[o], &["ResourceGroup"]).or_else(|| after("resourcegroups"))));
    r.set("result_type", sv(first(&[o, props], &["resultType", "ResultType", "status", "statusText"])));
    r.set("result_signature", sv(first(&[o, props], &["resultSignature", "ResultSignature", "statusText", "code"])));
    r.set("result_description", sv(first(&[o], &["resultDescription", "ResultDescription"])));
    let status = [o, props]
        .iter()
        .flatten()
        .find_map(|x| as_i64(get(*x, &["statusCode", "httpStatusCode", "httpStatusCode_d", "StatusCode"])));
    r.set("status_code", status.map(Value::from).unwrap_or(Value::Null));
    let duration = as_i64(get(obj, &["durationMs", "DurationMs"]))
        .or_else(|| as_str(get(obj, &["durationMs", "DurationMs"])).and_then(|s| s.split('.').next()?.parse().ok()));
    r.set("duration_ms", duration.map(Value::from).unwrap_or(Value::Null));
    r.set("correlation_id", sv(first(&[o], &["correlationId", "CorrelationId"])));
    r.set("caller_ip", sv(ip(get(obj, &["callerIpAddress", "CallerIPAddress", "CallerIpAddress", "clientIP_s"]))));
    // The caller: token claims (Key Vault), the requester (Storage), or their flattened columns.
    r.set(
        "caller_object_id",
        sv(first(&[claim], &[OID, "oid"]).or_else(|| first(&[requester], &["objectId"])).or_else(|| {
            first(
                &[o],
                &[
                    "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g",
                    "identity_claim_oid_g",
                    "RequesterObjectId",
                ],
            )
        })),
    );
    r.set(
        "caller_app_id",
        sv(first(&[claim], &["appid", "azp"])
            .or_else(|| first(&[requester], &["appId"]))
            .or_else(|| first(&[o], &["identity_claim_appid_g", "identity_claim_azp_g", "RequesterAppId"]))),
    );
    r.set(
        "caller_upn",
        sv(first(&[claim], &[UPN, "upn"]).or_else(|| first(&[requester], &["upn"])).or_else(|| {
            first(
                &[o],
                &[
                    "identity_claim_http_schemas_xmlsoap_org_ws_2005_05_identity_claims_upn_s",
                    "identity_claim_upn_s",
                    "RequesterUpn",
                ],
            )
        })),
    );
    r.set(
        "caller_tenant_id",
        sv(first(&[claim], &[TID, "tid"]).or_else(|| first(&[requester], &["tenantId"])).or_else(|| {
            first(
                &[o],
                &[
                    "identity_claim_http_schemas_microsoft_com_identity_claims_tenantid_g",
                    "identity_claim_tid_g",
                    "RequesterTenantId",
                    "TenantId",
                    "tenantId",
                ],
            )
        })),
    );
    r.set(
        "user_agent",
        sv(first(
            &[props, o],
            &["userAgentHeader", "clientInfo", "clientInfo_s", "UserAgentHeader", "userAgentHeader_s"],
        )),
    );
    let ts = time_of(get(obj, &["time", "TimeGenerated", "timeGenerated"]))
        .ok_or_else(|| "missing or unparsable timestamp (time / TimeGenerated)".to_string())?;
    // The record's own id where it has one, else a stable hash of the record.
    let own = first(&[props, o], &["id", "id_s", "requestId", "RequestId"]).or_else(|| {
        first(&[props], &["requestUri"])
            .map(|u| format!("{u}\u{1f}{}", first(&[o], &["correlationId", "CorrelationId"]).unwrap_or_default()))
    });
    let id = own.unwrap_or_else(|| format!("{:016x}", fnv64(&[Value::Object(obj.clone()).to_string().as_bytes()])));
    r.set("id", Value::String(id.clone()));
    // The same id at another time or operation is another record (Key Vault ids name the secret).
    let dedup = format!(
        "{id}\u{1f}{ts}\u{1f}{}\u{1f}{}",
        category.unwrap_or_default(),
        first(&[o], &["operationName", "OperationName"]).unwrap_or_default()
    );
    Ok(Mapped { table: Table::ResourceLogs, ts, dedup_id: Some(dedup), row: r.vals, ingested_at: None })
}
