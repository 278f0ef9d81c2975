//! Records in their export formats (diagnostic settings, O365, Suricata EVE), as JSON values.

use super::tenant::{push_uid, uid, Principal, Rng, TENANT};
use chrono::{DateTime, Utc};
use serde_json::Value;

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

/// Whether `s` needs no escape in a JSON string (no control character, quote or backslash),
/// checked eight bytes at a time.
fn plain(s: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `x` below `n` (n ≤ 0x80) sets its high bit here: bytes ≥ 0x80 clear it (`!x`).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * n as u64) & !x & HIGHS;
    let zero = |x: u64| below(x, 1);
    let (words, rest) = s.as_bytes().as_chunks::<8>();
    words.iter().all(|w| {
        let x = u64::from_ne_bytes(*w);
        (below(x, 0x20) | zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64))) == 0
    }) && rest.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// `s` as a JSON string.
fn push_json_str(buf: &mut String, s: &str) {
    if plain(s) {
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
        tree(|b| self.write(b))
    }

    /// As one line of JSON text appended to `buf`, written directly (no JSON tree): the
    /// generator's hottest record, read back by ingest's typed sign-in reader.
    pub(super) fn write(&self, buf: &mut String) {
        let SignIn { category, id, t, principal: p, ip, error_code: err, resource, user } = *self;
        let located = ip.is_some();
        let ip = ip.unwrap_or("");
        let at = iso(t);
        let mut code = String::with_capacity(12);
        err.put(&mut code);
        buf.push_str("{\"time\":\"");
        buf.push_str(&at);
        buf.push_str("\",\"resourceId\":\"/tenants/");
        buf.push_str(TENANT);
        buf.push_str("/providers/Microsoft.aadiam\",\"operationName\":\"Sign-in activity\",\"category\":");
        push_json_str(buf, category);
        buf.push_str(",\"tenantId\":\"");
        buf.push_str(TENANT);
        buf.push_str("\",\"resultType\":\"");
        buf.push_str(&code);
        buf.push_str("\",\"callerIpAddress\":");
        push_json_str(buf, ip);
        buf.push_str(",\"properties\":{\"id\":");
        push_json_str(buf, id);
        buf.push_str(",\"createdDateTime\":\"");
        buf.push_str(&at);
        buf.push_str("\",\"appId\":");
        push_json_str(buf, &p.app_id);
        buf.push_str(",\"ipAddress\":");
        push_json_str(buf, ip);
        buf.push_str(",\"status\":{\"errorCode\":");
        buf.push_str(&code);
        buf.push_str(",\"failureReason\":");
        if err == 0 {
            buf.push_str("null");
        } else {
            push_json_str(buf, aadsts(err));
        }
        buf.push_str("},\"correlationId\":\"");
        push_uid(buf, t.timestamp_micros() as u64, 77, err as u64 ^ p.weight.to_bits());
        buf.push_str("\",\"resourceDisplayName\":");
        push_json_str(buf, resource);
        buf.push_str(",\"resourceId\":\"00000003-0000-0000-c000-000000000000\",\"location\":{\"city\":\"\",\"countryOrRegion\":\"");
        buf.push_str(if located { "US" } else { "" });
        buf.push_str("\"},\"isInteractive\":");
        buf.push_str(if category == "SignInLogs" { "true" } else { "false" });
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

/// A JSON text in place: [`jtext!`]'s values other than objects, arrays and `null`.
pub(super) trait JsonText {
    fn put(&self, buf: &mut String);
}

impl JsonText for str {
    fn put(&self, buf: &mut String) {
        push_json_str(buf, self)
    }
}

impl JsonText for String {
    fn put(&self, buf: &mut String) {
        push_json_str(buf, self)
    }
}

impl<T: JsonText + ?Sized> JsonText for &T {
    fn put(&self, buf: &mut String) {
        (**self).put(buf)
    }
}

impl<T: JsonText> JsonText for Option<T> {
    fn put(&self, buf: &mut String) {
        match self {
            Some(v) => v.put(buf),
            None => buf.push_str("null"),
        }
    }
}

impl JsonText for u64 {
    fn put(&self, buf: &mut String) {
        let mut digits = [0u8; 20];
        let (mut v, mut at) = (*self, digits.len());
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        buf.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
    }
}

impl JsonText for i64 {
    fn put(&self, buf: &mut String) {
        if *self < 0 {
            buf.push('-');
        }
        self.unsigned_abs().put(buf)
    }
}

impl JsonText for i32 {
    fn put(&self, buf: &mut String) {
        i64::from(*self).put(buf)
    }
}

/// Appends the JSON text of a literal written as `serde_json::json!`'s are — objects `{"key":
/// value, …}`, arrays `[…]`, `null`, and any other value as one token tree (a literal, a variable,
/// a parenthesized expression) written by [`JsonText`] — without building the tree. Keys are
/// literals needing no escapes, written in the order serde_json's map serializes (sorted), so the
/// text is the one the tree serialized to; values are evaluated in the order written.
macro_rules! jtext {
    ($b:ident, null) => {
        $b.push_str("null")
    };
    ($b:ident, {}) => {
        $b.push_str("{}")
    };
    ($b:ident, { $($m:tt)+ }) => {{
        $b.push('{');
        jtext!(@members $b, $($m)+);
        $b.push('}');
    }};
    // An object's members without its braces (a member written only sometimes goes between).
    (@members $b:ident, $k0:literal : $v0:tt $(, $k:literal : $v:tt)*) => {{
        $b.push_str(concat!("\"", $k0, "\":"));
        jtext!($b, $v0);
        $(
            $b.push_str(concat!(",\"", $k, "\":"));
            jtext!($b, $v);
        )*
    }};
    ($b:ident, []) => {
        $b.push_str("[]")
    };
    ($b:ident, [ $v0:tt $(, $v:tt)* ]) => {{
        $b.push('[');
        jtext!($b, $v0);
        $(
            $b.push(',');
            jtext!($b, $v);
        )*
        $b.push(']');
    }};
    ($b:ident, $v:expr) => {
        JsonText::put(&$v, $b)
    };
}

/// A record's tree from its text (the scenarios emit trees).
pub(super) fn tree(write: impl FnOnce(&mut String)) -> Value {
    let mut text = String::new();
    write(&mut text);
    serde_json::from_str(&text).expect("the generator writes valid JSON")
}

/// `t` as the string `2026-11-19T10:20:00` (O365's `CreationTime`).
struct Secs(DateTime<Utc>);

impl JsonText for Secs {
    fn put(&self, buf: &mut String) {
        use std::fmt::Write;
        let _ = write!(buf, "\"{}\"", self.0.format("%Y-%m-%dT%H:%M:%S"));
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn audit(
    b: &mut String,
    id: &str,
    t: DateTime<Utc>,
    op: &str,
    by_sp: Option<&Principal>,
    by_user: Option<&Principal>,
    ip: Option<&str>,
    target: &Principal,
    target_type: &str,
) {
    let category = match target_type {
        "User" => "UserManagement",
        "Group" => "GroupManagement",
        "Device" => "Device",
        _ => "ApplicationManagement",
    };
    let target_id = if target_type == "Application" { &target.app_id } else { &target.id };
    let at = iso(t);
    jtext!(b, {"callerIpAddress": (ip.unwrap_or("")), "category": "AuditLogs", "operationName": op, "properties": {
        "activityDateTime": at, "activityDisplayName": op,
        "additionalDetails": [{"key": "User-Agent", "value": "Microsoft Azure Graph Client Library"}, {"key": "AppId", "value": (target.app_id)}],
        "category": category, "id": id, "initiatedBy": (Initiated(by_sp, by_user, ip)), "loggedByService": "Core Directory",
        "operationType": "Update", "result": "success",
        "targetResources": [{"displayName": (target.name), "id": target_id,
            "modifiedProperties": [{"displayName": "KeyDescription", "newValue": "[\"[KeyIdentifier=new,KeyType=Password]\"]", "oldValue": "[]"}],
            "type": target_type}]},
        "tenantId": TENANT, "time": at});
}

/// An audit record's `initiatedBy`: the service principal, else the user, else nobody.
struct Initiated<'a>(Option<&'a Principal>, Option<&'a Principal>, Option<&'a str>);

impl JsonText for Initiated<'_> {
    fn put(&self, b: &mut String) {
        match *self {
            Initiated(Some(sp), _, _) => jtext!(b, {"app": {"appId": (sp.app_id), "displayName": (sp.name),
                "servicePrincipalId": (sp.id), "servicePrincipalName": (sp.name)}}),
            Initiated(_, Some(u), ip) => {
                jtext!(b, {"user": {"id": (u.id), "ipAddress": ip, "userPrincipalName": (u.name)}})
            }
            _ => jtext!(b, {}),
        }
    }
}

pub(super) fn graph_call(b: &mut String, id: &str, t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) {
    let paths = [
        "/v1.0/users",
        "/v1.0/groups",
        "/v1.0/applications",
        "/v1.0/servicePrincipals",
        "/v1.0/users/{}/messages",
        "/v1.0/sites/{}/drives",
    ];
    // The random draws in the order the record's fields were first made in.
    let path = rng.pick(&paths).replace("{}", &uid(rng.next(), 5, 0));
    let method = if rng.chance(0.9) { "GET" } else { "POST" };
    let status = if rng.chance(0.97) { 200 } else { 403 };
    let size = rng.below(50_000);
    let duration = rng.below(900);
    let at = iso(t);
    jtext!(b, {"callerIpAddress": ip, "category": "MicrosoftGraphActivityLogs", "operationName": "Microsoft Graph Activity",
        "properties": {"appId": (p.app_id), "clientAuthMethod": "1", "durationMs": duration, "ipAddress": ip, "operationId": id,
            "requestId": id, "requestMethod": method, "requestUri": (format!("https://graph.microsoft.com{path}")),
            "responseSizeBytes": size, "responseStatusCode": status, "roles": "User.Read.All", "servicePrincipalId": (p.id),
            "timeGenerated": at, "userAgent": "python-requests/2.31"},
        "tenantId": TENANT, "time": at});
}

#[allow(clippy::too_many_arguments)]
pub(super) fn o365(
    b: &mut String,
    id: &str,
    t: DateTime<Utc>,
    op: &str,
    user_id: &str,
    app_id: &str,
    ip: &str,
    sp: bool,
) {
    let mail = op == "MailItemsAccessed";
    b.push('{');
    jtext!(@members b, "AppId": app_id, "ClientIPAddress": ip, "CreationTime": (Secs(t)));
    if sp {
        b.push(',');
        jtext!(@members b, "ExtendedProperties": [{"Name": "extendedAuditEventCategory", "Value": "ServicePrincipal"}]);
    }
    b.push(',');
    jtext!(@members b, "Id": id, "Operation": op, "OrganizationId": TENANT, "RecordType": (if mail { 50 } else { 8 }),
        "ResultStatus": "Succeeded", "UserId": user_id, "UserType": (if sp { 4 } else { 0 }),
        "Workload": (if mail { "Exchange" } else { "AzureActiveDirectory" }));
    b.push('}');
}

#[allow(clippy::too_many_arguments)]
pub(super) fn risk(
    b: &mut String,
    id: &str,
    t: DateTime<Utc>,
    updated: DateTime<Utc>,
    p: &Principal,
    ty: &str,
    level: &str,
    state: &str,
    ip: &str,
) {
    let (at, up) = (iso(t), iso(updated));
    jtext!(b, {"category": "ServicePrincipalRiskEvents", "properties": {"activity": "servicePrincipal", "activityDateTime": at,
        "appId": (p.app_id), "detectedDateTime": at, "detectionTimingType": "offline", "id": id, "ipAddress": ip, "keyIds": [],
        "lastUpdatedDateTime": up, "riskDetail": "none", "riskEventType": ty, "riskLevel": level, "riskState": state,
        "servicePrincipalDisplayName": (p.name), "servicePrincipalId": (p.id), "source": "IdentityProtection"},
        "tenantId": TENANT, "time": up});
}

pub(super) fn net_alert(b: &mut String, t: DateTime<Utc>, flow: u64, src: &str, sig: &str, sid: u64) {
    let ts = t.format("%Y-%m-%dT%H:%M:%S%.6f+0000").to_string();
    jtext!(b, {"alert": {"action": "allowed", "category": "Misc Attack", "gid": 1, "rev": 1, "severity": 2, "signature": sig,
            "signature_id": sid},
        "dest_ip": "10.0.0.10", "dest_port": 443, "event_type": "alert", "flow_id": flow, "proto": "TCP", "src_ip": src,
        "src_port": (40000 + flow % 20000), "timestamp": ts});
}

pub(super) fn activity(b: &mut String, t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) {
    let ops = [
        "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION",
        "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE",
        "MICROSOFT.KEYVAULT/VAULTS/READ",
    ];
    // The random draws in the order the record's fields were first made in.
    let op = *rng.pick(&ops);
    let correlation = uid(rng.next(), 6, 0);
    let resource = format!(
        "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-{}/PROVIDERS/MICROSOFT.STORAGE/STORAGEACCOUNTS/SA{}",
        uid(1, 1, 1),
        rng.below(20),
        rng.below(99)
    );
    let event = uid(rng.next(), 7, 0);
    jtext!(b, {"callerIpAddress": ip, "category": "Administrative", "correlationId": correlation,
        "identity": {"claims": {"appid": (p.app_id), "http://schemas.microsoft.com/identity/claims/objectidentifier": (p.id)}},
        "level": "Information", "operationName": op, "properties": {"eventDataId": event}, "resourceId": resource,
        "resultSignature": "Succeeded.OK", "resultType": "Success", "time": (iso(t))});
}

/// A Key Vault data-plane request (diagnostic settings `AuditEvent`) by the principal whose token
/// carries object id `oid`.
#[allow(clippy::too_many_arguments)]
pub(super) fn kv_request(
    b: &mut String,
    id: &str,
    t: DateTime<Utc>,
    oid: &str,
    app_id: &str,
    ip: &str,
    op: &str,
    vault: &str,
    status: i64,
) {
    let ok = status < 400;
    let host = vault.to_ascii_lowercase();
    jtext!(b, {"callerIpAddress": ip, "category": "AuditEvent", "correlationId": id,
        "identity": {"claim": {"appid": app_id, "http://schemas.microsoft.com/identity/claims/objectidentifier": oid}},
        "operationName": op, "properties": {"httpStatusCode": status, "id": (format!("https://{host}.vault.azure.net/secrets/app-secret")),
            "requestUri": (format!("https://{host}.vault.azure.net/secrets/app-secret?api-version=7.4"))},
        "resourceId": (format!("/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-KV/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{vault}", uid(1, 1, 1))),
        "resultSignature": (if ok { "OK" } else { "Forbidden" }), "resultType": (if ok { "Success" } else { "Forbidden" }),
        "time": (iso(t))});
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
    use serde_json::json;

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

    // The background's other records as they were built before they were written as text:
    // `json!` trees.
    #[allow(clippy::too_many_arguments)]
    fn tree_audit(
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

    fn tree_graph_call(id: String, t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) -> Value {
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

    fn tree_o365(
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
    fn tree_risk(
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

    fn tree_net_alert(t: DateTime<Utc>, flow: u64, src: &str, sig: &str, sid: u64) -> Value {
        json!({"timestamp": t.format("%Y-%m-%dT%H:%M:%S%.6f+0000").to_string(), "flow_id": flow, "event_type": "alert", "src_ip": src,
            "src_port": 40000 + flow % 20000, "dest_ip": "10.0.0.10", "dest_port": 443, "proto": "TCP",
            "alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1, "signature": sig, "category": "Misc Attack", "severity": 2}})
    }

    fn tree_activity(t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) -> Value {
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
    fn tree_kv_request(
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

    /// Every byte of every position of strings of length 0–24: [`plain`] is the byte-by-byte check.
    #[test]
    fn plain_is_the_byte_check() {
        let naive = |s: &str| s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        let base = "abcdefghijklmnopqrstuvwx";
        for len in 0..=24 {
            assert!(plain(&base[..len]));
            for at in 0..len {
                for b in (0u8..0x80).map(char::from).chain(['é', '\u{7f}', '\u{2028}', '€']) {
                    let mut t = base[..len].to_string();
                    t.replace_range(at..at + 1, b.encode_utf8(&mut [0; 4]));
                    assert_eq!(plain(&t), naive(&t), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        for v in [0, 1, 9, 10, 99, 100, -1, -10, 7_000_215, i64::MIN, i64::MAX] {
            let mut b = String::new();
            v.put(&mut b);
            assert_eq!(b, serde_json::to_string(&v).unwrap());
        }
        for v in [0, 10, u64::MAX] {
            let mut b = String::new();
            v.put(&mut b);
            assert_eq!(b, v.to_string());
        }
    }

    /// Each record written as text is the text its tree serialized to (keys sorted), with the
    /// same random draws.
    #[test]
    fn records_text_is_the_tree_they_replaced() {
        let mut rng = Rng::new(5, 6);
        let t0 = DateTime::parse_from_rfc3339("2026-11-19T00:00:00Z").unwrap().with_timezone(&Utc);
        let names = ["app-payroll", "odd \"quoted\" \\ name\ttab", "ünïcode-app", ""];
        let text = |write: &dyn Fn(&mut String)| {
            let mut b = String::from("x");
            write(&mut b);
            b[1..].to_string()
        };
        for k in 0..200u64 {
            let p = Principal {
                id: uid(1, 2, k),
                app_id: uid(1, 3, k),
                name: names[k as usize % names.len()].to_string(),
                owner: None,
                weight: rng.unit(),
                homes: vec![],
            };
            let u = Principal { name: names[(k as usize + 1) % names.len()].to_string(), ..p.clone() };
            let t = t0 + Duration::microseconds(rng.below(86_400_000_000) as i64);
            let ip = ["10.1.2.3", "2001:db8::1", "", "a\"b"][k as usize % 4];
            let id = uid(9, 9, k);
            let ser = |v: Value| serde_json::to_string(&v).unwrap();
            for (op, ty) in AUDIT_OPS.iter().map(|o| (o.0, o.1)) {
                let (by_sp, by_user) = [(Some(&p), None), (None, Some(&u)), (None, None)][k as usize % 3];
                let ip = (k % 2 == 0).then_some(ip);
                assert_eq!(
                    text(&|b| audit(b, &id, t, op, by_sp, by_user, ip, &p, ty)),
                    ser(tree_audit(id.clone(), t, op, by_sp, by_user, ip, &p, ty))
                );
            }
            let (mut r1, mut r2) = (rng.clone(), rng.clone());
            let mut b = String::new();
            graph_call(&mut b, &id, t, &p, ip, &mut r1);
            assert_eq!(b, ser(tree_graph_call(id.clone(), t, &p, ip, &mut r2)));
            assert_eq!(r1.next(), r2.next());
            b.clear();
            activity(&mut b, t, &p, ip, &mut r1);
            assert_eq!(b, ser(tree_activity(t, &p, ip, &mut r2)));
            assert_eq!(r1.next(), r2.next());
            for (op, sp) in [("MailItemsAccessed", false), ("Update service principal.", true)] {
                assert_eq!(
                    text(&|b| o365(b, &id, t, op, &u.name, &p.app_id, ip, sp)),
                    ser(tree_o365(id.clone(), t, op, &u.name, &p.app_id, ip, sp))
                );
            }
            let later = t + Duration::minutes(30);
            assert_eq!(
                text(&|b| risk(b, &id, t, later, &p, "leakedCredentials", "low", "atRisk", ip)),
                ser(tree_risk(id.clone(), t, later, &p, "leakedCredentials", "low", "atRisk", ip))
            );
            let flow = rng.next() % 1_000_000_000;
            assert_eq!(
                text(&|b| net_alert(b, t, flow, ip, &p.name, 2_010_000 + k)),
                ser(tree_net_alert(t, flow, ip, &p.name, 2_010_000 + k))
            );
            let status = [200, 403][k as usize % 2];
            assert_eq!(
                text(&|b| kv_request(b, &id, t, &p.id, &p.app_id, ip, "SecretGet", "KV-07", status)),
                ser(tree_kv_request(id.clone(), t, &p.id, &p.app_id, ip, "SecretGet", "KV-07", status))
            );
        }
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
