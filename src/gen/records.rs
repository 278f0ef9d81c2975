//! Records in their export formats (diagnostic settings, O365, Suricata EVE), as JSON values.

use super::tenant::{uid, Principal, Rng, TENANT};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Records, in their export formats

pub(super) fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f0Z").to_string()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn signin(
    category: &str,
    id: String,
    t: DateTime<Utc>,
    p: &Principal,
    ip: Option<&str>,
    err: i64,
    resource: &str,
    user: bool,
) -> Value {
    let mut props = json!({
        "id": id, "createdDateTime": iso(t), "appId": p.app_id, "ipAddress": ip.unwrap_or(""),
        "status": {"errorCode": err, "failureReason": if err == 0 { Value::Null } else { Value::from(aadsts(err)) }},
        "correlationId": uid(t.timestamp_micros() as u64, 77, err as u64 ^ p.weight.to_bits()),
        "resourceDisplayName": resource, "resourceId": "00000003-0000-0000-c000-000000000000",
        "location": {"city": "", "countryOrRegion": if ip.is_some() { "US" } else { "" }},
        "isInteractive": category == "SignInLogs",
    });
    let o = props.as_object_mut().expect("object");
    if user {
        o.insert("userId".into(), p.id.clone().into());
        o.insert("userPrincipalName".into(), p.name.clone().into());
        o.insert("appDisplayName".into(), "Office 365 Exchange Online".into());
    } else {
        o.insert("servicePrincipalId".into(), p.id.clone().into());
        o.insert("servicePrincipalName".into(), p.name.clone().into());
        o.insert("appOwnerTenantId".into(), p.owner.unwrap_or(TENANT).into());
        o.insert("clientCredentialType".into(), "clientSecret".into());
        o.insert("servicePrincipalCredentialKeyId".into(), uid(7, 8, p.weight.to_bits()).into());
    }
    json!({"time": iso(t), "resourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"), "operationName": "Sign-in activity",
        "category": category, "tenantId": TENANT, "resultType": err.to_string(), "callerIpAddress": ip.unwrap_or(""),
        "properties": props})
}

/// A service principal's sign-in to Microsoft Graph from `ip` (the scenarios' usual shape).
pub(super) fn sp_signin(id: String, t: DateTime<Utc>, p: &Principal, ip: &str, err: i64) -> Value {
    signin("ServicePrincipalSignInLogs", id, t, p, Some(ip), err, "Microsoft Graph", false)
}

pub(super) fn aadsts(code: i64) -> &'static str {
    match code {
        7000215 => "Invalid client secret provided.",
        7000222 => "The provided client secret keys are expired.",
        700027 => "Client assertion failed signature validation.",
        700016 => "Application not found in the directory.",
        _ => "Other",
    }
}

/// Background directory operations: (operation, target type, weight).
pub(super) const AUDIT_OPS: [(&str, &str, u64); 12] = [
    ("Update user", "User", 300),
    ("Add member to group", "Group", 200),
    ("Remove member from group", "Group", 100),
    ("Update device", "Device", 150),
    ("Update group", "Group", 50),
    ("Reset user password", "User", 30),
    ("Update service principal", "ServicePrincipal", 50),
    ("Consent to application", "ServicePrincipal", 30),
    ("Add app role assignment to service principal", "ServicePrincipal", 50),
    ("Update application", "Application", 10),
    ("Add service principal credentials", "ServicePrincipal", 5),
    ("Update application – Certificates and secrets management", "Application", 5),
];

#[allow(clippy::too_many_arguments)]
pub(super) fn audit(
    id: String,
    t: DateTime<Utc>,
    op: &str,
    by_sp: Option<&Principal>,
    by_user: Option<&Principal>,
    ip: Option<&str>,
    target: &Principal,
    target_type: &str,
) -> Value {
    let initiated = match (by_sp, by_user) {
        (Some(sp), _) => {
            json!({"app": {"appId": sp.app_id, "displayName": sp.name, "servicePrincipalId": sp.id, "servicePrincipalName": sp.name}})
        }
        (_, Some(u)) => json!({"user": {"id": u.id, "userPrincipalName": u.name, "ipAddress": ip}}),
        _ => json!({}),
    };
    let category = match target_type {
        "User" => "UserManagement",
        "Group" => "GroupManagement",
        "Device" => "Device",
        _ => "ApplicationManagement",
    };
    json!({"time": iso(t), "category": "AuditLogs", "operationName": op, "tenantId": TENANT, "callerIpAddress": ip.unwrap_or(""),
        "properties": {"id": id, "category": category, "result": "success", "activityDisplayName": op,
        "activityDateTime": iso(t), "loggedByService": "Core Directory", "operationType": "Update", "initiatedBy": initiated,
        "targetResources": [{"id": if target_type == "Application" { &target.app_id } else { &target.id }, "displayName": target.name, "type": target_type,
            "modifiedProperties": [{"displayName": "KeyDescription", "oldValue": "[]", "newValue": "[\"[KeyIdentifier=new,KeyType=Password]\"]"}]}],
        "additionalDetails": [{"key": "User-Agent", "value": "Microsoft Azure Graph Client Library"}, {"key": "AppId", "value": target.app_id}]}})
}

pub(super) fn graph_call(id: String, t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) -> Value {
    let paths = [
        "/v1.0/users",
        "/v1.0/groups",
        "/v1.0/applications",
        "/v1.0/servicePrincipals",
        "/v1.0/users/{}/messages",
        "/v1.0/sites/{}/drives",
    ];
    let path = rng.pick(&paths).replace("{}", &uid(rng.next(), 5, 0));
    json!({"time": iso(t), "category": "MicrosoftGraphActivityLogs", "operationName": "Microsoft Graph Activity", "tenantId": TENANT,
        "callerIpAddress": ip, "properties": {"requestId": id, "operationId": id, "timeGenerated": iso(t), "appId": p.app_id,
        "servicePrincipalId": p.id, "ipAddress": ip, "requestMethod": if rng.chance(0.9) { "GET" } else { "POST" },
        "requestUri": format!("https://graph.microsoft.com{path}"), "responseStatusCode": if rng.chance(0.97) { 200 } else { 403 },
        "responseSizeBytes": rng.below(50_000), "durationMs": rng.below(900), "clientAuthMethod": "1", "roles": "User.Read.All", "userAgent": "python-requests/2.31"}})
}

pub(super) fn o365(
    id: String,
    t: DateTime<Utc>,
    op: &str,
    user_id: &str,
    app_id: &str,
    ip: &str,
    sp_category: bool,
) -> Value {
    let mut v = json!({"CreationTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "Id": id, "Operation": op, "OrganizationId": TENANT,
        "RecordType": if op == "MailItemsAccessed" { 50 } else { 8 }, "ResultStatus": "Succeeded", "UserId": user_id, "UserType": if sp_category { 4 } else { 0 },
        "Workload": if op == "MailItemsAccessed" { "Exchange" } else { "AzureActiveDirectory" }, "ClientIPAddress": ip, "AppId": app_id});
    if sp_category {
        v["ExtendedProperties"] = json!([{"Name": "extendedAuditEventCategory", "Value": "ServicePrincipal"}]);
    }
    v
}

#[allow(clippy::too_many_arguments)]
pub(super) fn risk(
    id: String,
    t: DateTime<Utc>,
    updated: DateTime<Utc>,
    p: &Principal,
    ty: &str,
    level: &str,
    state: &str,
    ip: &str,
) -> Value {
    json!({"time": iso(updated), "category": "ServicePrincipalRiskEvents", "tenantId": TENANT, "properties": {"id": id, "riskEventType": ty,
        "riskLevel": level, "riskState": state, "riskDetail": "none", "source": "IdentityProtection", "detectionTimingType": "offline",
        "activity": "servicePrincipal", "ipAddress": ip, "detectedDateTime": iso(t), "activityDateTime": iso(t), "lastUpdatedDateTime": iso(updated),
        "servicePrincipalId": p.id, "servicePrincipalDisplayName": p.name, "appId": p.app_id, "keyIds": []}})
}

pub(super) fn net_alert(t: DateTime<Utc>, flow: u64, src: &str, sig: &str, sid: u64) -> Value {
    json!({"timestamp": t.format("%Y-%m-%dT%H:%M:%S%.6f+0000").to_string(), "flow_id": flow, "event_type": "alert", "src_ip": src,
        "src_port": 40000 + flow % 20000, "dest_ip": "10.0.0.10", "dest_port": 443, "proto": "TCP",
        "alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1, "signature": sig, "category": "Misc Attack", "severity": 2}})
}

pub(super) fn activity(t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) -> Value {
    let ops = [
        "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION",
        "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE",
        "MICROSOFT.KEYVAULT/VAULTS/READ",
    ];
    json!({"time": iso(t), "category": "Administrative", "operationName": rng.pick(&ops), "resultType": "Success", "resultSignature": "Succeeded.OK",
        "callerIpAddress": ip, "correlationId": uid(rng.next(), 6, 0), "level": "Information",
        "resourceId": format!("/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-{}/PROVIDERS/MICROSOFT.STORAGE/STORAGEACCOUNTS/SA{}", uid(1, 1, 1), rng.below(20), rng.below(99)),
        "identity": {"claims": {"appid": p.app_id, "http://schemas.microsoft.com/identity/claims/objectidentifier": p.id}},
        "properties": {"eventDataId": uid(rng.next(), 7, 0)}})
}

/// A Key Vault data-plane request (diagnostic settings `AuditEvent`) by the principal whose token
/// carries object id `oid`.
#[allow(clippy::too_many_arguments)]
pub(super) fn kv_request(
    id: String,
    t: DateTime<Utc>,
    oid: &str,
    app_id: &str,
    ip: &str,
    op: &str,
    vault: &str,
    status: i64,
) -> Value {
    json!({"time": iso(t), "category": "AuditEvent", "operationName": op, "resultType": if status < 400 { "Success" } else { "Forbidden" },
        "resultSignature": if status < 400 { "OK" } else { "Forbidden" }, "callerIpAddress": ip, "correlationId": id,
        "resourceId": format!("/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-KV/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{vault}", uid(1, 1, 1)),
        "identity": {"claim": {"http://schemas.microsoft.com/identity/claims/objectidentifier": oid, "appid": app_id}},
        "properties": {"id": format!("https://{}.vault.azure.net/secrets/app-secret", vault.to_ascii_lowercase()), "httpStatusCode": status,
            "requestUri": format!("https://{}.vault.azure.net/secrets/app-secret?api-version=7.4", vault.to_ascii_lowercase())}})
}

/// The category a record's file goes under.
pub(super) fn category_of(v: &Value) -> &str {
    if let Some(c) = v.get("category").and_then(Value::as_str) {
        return c;
    }
    if v.get("event_type").is_some() {
        return "suricata";
    }
    "o365"
}
