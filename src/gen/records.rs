//! Records in their export formats (diagnostic settings, O365, Suricata EVE), as JSON values.

use super::tenant::{push_uid, uid, Principal, Rng, TENANT};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Records, in their export formats

pub(super) fn iso(t: DateTime<Utc>) -> String {
    let mut s = String::with_capacity(28);
    push_iso(&mut s, t);
    s
}

/// `t` as the exports write it (`2026-11-19T10:20:00.1234560Z`: seven fraction digits).
fn push_iso(buf: &mut String, t: DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let (year, micros) = (t.year(), t.timestamp_subsec_micros().min(999_999));
    if !(0..=9999).contains(&year) {
        buf.push_str(&t.format("%Y-%m-%dT%H:%M:%S%.6f0Z").to_string());
        return;
    }
    // YYYY-MM-DDTHH:MM:SS.ffffff0Z
    let mut out = *b"0000-00-00T00:00:00.0000000Z";
    let mut digits = |at: usize, n: usize, v: u32| {
        let mut v = v;
        for k in (0..n).rev() {
            out[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(0, 4, year as u32);
    digits(5, 2, t.month());
    digits(8, 2, t.day());
    digits(11, 2, t.hour());
    digits(14, 2, t.minute());
    digits(17, 2, t.second());
    digits(20, 6, micros);
    buf.push_str(std::str::from_utf8(&out).expect("ASCII"));
}

/// `s` as a JSON string.
fn push_json_str(buf: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push('"');
        buf.push_str(s);
        buf.push('"');
    } else {
        buf.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
}

/// One generated sign-in in diagnostic-settings form: what varies from one to the next.
pub(super) struct SignIn<'a> {
    /// The sign-in log (`ServicePrincipalSignInLogs`, `SignInLogs`, …).
    pub category: &'a str,
    pub id: &'a str,
    pub t: DateTime<Utc>,
    pub principal: &'a Principal,
    /// The caller's address (none for a managed identity's sign-in).
    pub ip: Option<&'a str>,
    pub error_code: i64,
    /// The resource signed in to (its display name).
    pub resource: &'a str,
    /// A user's sign-in (user fields) rather than a workload's (service principal fields).
    pub user: bool,
}

impl SignIn<'_> {
    /// As parsed JSON (the scenarios' records): the tree of [`SignIn::write`]'s text.
    pub(super) fn value(&self) -> Value {
        let mut line = String::new();
        self.write(&mut line);
        serde_json::from_str(&line).expect("the generator writes valid JSON")
    }

    /// As one line of JSON text appended to `buf`, written directly (no JSON tree): the
    /// generator's hottest record, read back by ingest's typed sign-in reader.
    pub(super) fn write(&self, buf: &mut String) {
        use std::fmt::Write;
        let SignIn { category, id, t, principal: p, ip, error_code: err, resource, user } = *self;
        let located = ip.is_some();
        let ip = ip.unwrap_or("");
        buf.push_str("{\"time\":\"");
        push_iso(buf, t);
        let _ = write!(
            buf,
            "\",\"resourceId\":\"/tenants/{TENANT}/providers/Microsoft.aadiam\",\"operationName\":\"Sign-in activity\",\"category\":"
        );
        push_json_str(buf, category);
        let _ = write!(buf, ",\"tenantId\":\"{TENANT}\",\"resultType\":\"{err}\",\"callerIpAddress\":");
        push_json_str(buf, ip);
        buf.push_str(",\"properties\":{\"id\":");
        push_json_str(buf, id);
        buf.push_str(",\"createdDateTime\":\"");
        push_iso(buf, t);
        buf.push_str("\",\"appId\":");
        push_json_str(buf, &p.app_id);
        buf.push_str(",\"ipAddress\":");
        push_json_str(buf, ip);
        let _ = write!(buf, ",\"status\":{{\"errorCode\":{err},\"failureReason\":");
        if err == 0 {
            buf.push_str("null");
        } else {
            push_json_str(buf, aadsts(err));
        }
        buf.push_str("},\"correlationId\":\"");
        push_uid(buf, t.timestamp_micros() as u64, 77, err as u64 ^ p.weight.to_bits());
        buf.push_str("\",\"resourceDisplayName\":");
        push_json_str(buf, resource);
        let _ = write!(
            buf,
            ",\"resourceId\":\"00000003-0000-0000-c000-000000000000\",\"location\":{{\"city\":\"\",\"countryOrRegion\":\"{}\"}},\"isInteractive\":{}",
            if located { "US" } else { "" },
            category == "SignInLogs"
        );
        if user {
            buf.push_str(",\"userId\":");
            push_json_str(buf, &p.id);
            buf.push_str(",\"userPrincipalName\":");
            push_json_str(buf, &p.name);
            buf.push_str(",\"appDisplayName\":\"Office 365 Exchange Online\"");
        } else {
            buf.push_str(",\"servicePrincipalId\":");
            push_json_str(buf, &p.id);
            buf.push_str(",\"servicePrincipalName\":");
            push_json_str(buf, &p.name);
            buf.push_str(",\"appOwnerTenantId\":");
            push_json_str(buf, p.owner.unwrap_or(TENANT));
            buf.push_str(",\"clientCredentialType\":\"clientSecret\",\"servicePrincipalCredentialKeyId\":\"");
            push_uid(buf, 7, 8, p.weight.to_bits());
            buf.push('"');
        }
        buf.push_str("}}");
    }
}

/// A service principal's sign-in to Microsoft Graph from `ip` (the scenarios' usual shape).
pub(super) fn sp_signin(id: String, t: DateTime<Utc>, p: &Principal, ip: &str, err: i64) -> Value {
    let category = "ServicePrincipalSignInLogs";
    SignIn {
        category,
        id: &id,
        t,
        principal: p,
        ip: Some(ip),
        error_code: err,
        resource: "Microsoft Graph",
        user: false,
    }
    .value()
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    /// The sign-in as it was built before it was written as text: a `json!` tree.
    #[allow(clippy::too_many_arguments)]
    fn signin_tree(
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
            "id": id, "createdDateTime": t.format("%Y-%m-%dT%H:%M:%S%.6f0Z").to_string(), "appId": p.app_id, "ipAddress": ip.unwrap_or(""),
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
        json!({"time": t.format("%Y-%m-%dT%H:%M:%S%.6f0Z").to_string(), "resourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"), "operationName": "Sign-in activity",
            "category": category, "tenantId": TENANT, "resultType": err.to_string(), "callerIpAddress": ip.unwrap_or(""),
            "properties": props})
    }

    #[test]
    fn sign_in_text_is_the_tree_it_replaced() {
        let mut rng = Rng::new(3, 4);
        let t0 = DateTime::parse_from_rfc3339("2026-11-19T00:00:00Z").unwrap().with_timezone(&Utc);
        let names = ["app-payroll", "odd \"quoted\" \\ name\ttab", "ünïcode-app", ""];
        for k in 0..400u64 {
            let p = Principal {
                id: uid(1, 2, k),
                app_id: uid(1, 3, k),
                name: names[k as usize % names.len()].to_string(),
                owner: if k % 3 == 0 { Some(crate::gen::MS_TENANTS[0]) } else { None },
                weight: rng.unit(),
                homes: vec![],
            };
            // Whole seconds, whole milliseconds and arbitrary microseconds; before 1970 too.
            let t = match k % 4 {
                0 => t0 + Duration::seconds(rng.below(86_400) as i64),
                1 => t0 + Duration::milliseconds(rng.below(86_400_000) as i64),
                2 => t0 - Duration::days(20_000) + Duration::microseconds(rng.below(86_400_000_000) as i64),
                _ => t0 + Duration::microseconds(rng.below(86_400_000_000) as i64),
            };
            let ip = ["10.1.2.3", "2001:db8::1", ""];
            let ip = if k % 5 == 0 { None } else { Some(ip[k as usize % 3]) };
            let err = [0, 0, 7000215, 50126, 12][k as usize % 5];
            let cat = [
                "ServicePrincipalSignInLogs",
                "ManagedIdentitySignInLogs",
                "SignInLogs",
                "NonInteractiveUserSignInLogs",
            ][k as usize % 4];
            let user = k % 2 == 1;
            let id = uid(9, 9, k);
            let want = signin_tree(cat, id.clone(), t, &p, ip, err, "Microsoft Graph", user);
            let s = SignIn {
                category: cat,
                id: &id,
                t,
                principal: &p,
                ip,
                error_code: err,
                resource: "Microsoft Graph",
                user,
            };
            assert_eq!(s.value(), want, "record {k}");
            assert_eq!(iso(t), t.format("%Y-%m-%dT%H:%M:%S%.6f0Z").to_string());
            // Appended, not overwritten.
            let mut buf = String::from("x");
            s.write(&mut buf);
            assert_eq!(serde_json::from_str::<Value>(&buf[1..]).unwrap(), want);
            // Ingest's typed reader takes it (the generator's lake is then written at ingest's
            // speed), with the row the general path gives.
            let typed = crate::ingest::formats::typed::diagnostic(&buf[1..]);
            let general = crate::ingest::formats::map_record(&want, crate::ingest::formats::Format::Auto);
            let general = general.unwrap_or_else(|e| panic!("record {k}: {e:?}"));
            match typed {
                Some(a) => {
                    assert_eq!((a.ts, a.dedup_id, a.row), (general.ts, general.dedup_id, general.row), "record {k}")
                }
                // It may decline only what the generator's background never writes: escapes.
                None => assert!(p.name.contains(['"', '\\', '\t']), "record {k} declined: {}", &buf[1..]),
            }
        }
        // Years outside 0..=9999 (written by chrono's formatting, as before).
        for t in ["+10000-01-02T03:04:05.000006Z", "-0001-12-31T23:59:59.999999Z", "0000-01-01T00:00:00Z"] {
            let t = DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.fZ").unwrap().and_utc()
            });
            assert_eq!(iso(t), t.format("%Y-%m-%dT%H:%M:%S%.6f0Z").to_string());
        }
    }
}
