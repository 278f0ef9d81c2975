//! `wisp gen`: a synthetic tenant that looks like a real one, with injected attack scenarios and a
//! ground-truth file of what each detection must (and must not) report.
//!
//! Principals have heavy-tailed activity (Zipf weights): a few automation principals sign in
//! thousands of times a day from a handful of cloud networks, a long tail rarely. Microsoft
//! first-party apps, managed identities without IPs, users' interactive and non-interactive
//! sign-ins, AADSTS failures, audit events, Graph activity, Office 365 audit (MailItemsAccessed),
//! risk events re-sent as versions, network alerts and Azure activity fill the days.
//! Output is either the native export format (diagnostic-settings JSON lines, gzip, one file per
//! category and day) or the Parquet lake directly (through the same mapping as ingest).
//! Deterministic for a seed; streams day by day (bounded memory).

use crate::ingest::{formats::Format, IngestOptions, RecordSink, Summary};
use crate::lake::Lake;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Small,
    Medium,
    Large,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenOutput {
    Raw,
    Lake,
}

/// Sizes of a profile; rates are per day.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub sps: usize,
    pub mis: usize,
    pub users: usize,
    pub signins_per_day: f64,
    pub other_per_day: f64,
}

impl Profile {
    /// About 100k sign-ins (small), 30M + 10M (medium) and 100M + 30M (large) over 30 days.
    pub fn scale(self) -> Scale {
        match self {
            Profile::Small => {
                Scale { sps: 300, mis: 100, users: 1000, signins_per_day: 3_400.0, other_per_day: 1_100.0 }
            }
            Profile::Medium => {
                Scale { sps: 2000, mis: 800, users: 20_000, signins_per_day: 1_000_000.0, other_per_day: 333_000.0 }
            }
            Profile::Large => {
                Scale { sps: 5000, mis: 2000, users: 50_000, signins_per_day: 3_333_000.0, other_per_day: 1_000_000.0 }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub profile: Profile,
    pub days: u32,
    pub seed: u64,
    pub output: GenOutput,
    pub out: PathBuf,
    /// Exclusive end of the data (default 2026-11-20T00:00:00Z, so outputs are reproducible).
    pub end: DateTime<Utc>,
    pub keep_raw: bool,
    /// Gzip the raw files (as storage exports usually are).
    pub gzip: bool,
    pub progress: bool,
}

/// What a generator run wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GenReport {
    pub records: u64,
    pub by_category: BTreeMap<String, u64>,
    pub files: u64,
    pub ingest: Option<Summary>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
}

// ---------------------------------------------------------------------------------------------
// Randomness and names

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Rng(splitmix(seed ^ splitmix(stream.wrapping_add(0x9e37))))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        splitmix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// `rate` rounded randomly so the expectation is exact.
    fn count(&mut self, rate: f64) -> u64 {
        let base = rate.floor();
        base as u64 + u64::from(self.chance(rate - base))
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn uid(seed: u64, kind: u64, i: u64) -> String {
    let a = splitmix(seed ^ splitmix(kind << 40 ^ i));
    let b = splitmix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

const WORDS: [&str; 24] = [
    "payroll",
    "backup",
    "deploy",
    "sync",
    "etl",
    "reporting",
    "billing",
    "crm",
    "hr",
    "monitor",
    "scanner",
    "ingest",
    "archive",
    "export",
    "mailer",
    "ledger",
    "search",
    "identity",
    "gateway",
    "infra",
    "terraform",
    "github",
    "audit",
    "analytics",
];

pub const MS_TENANTS: [&str; 2] = ["f8cdef31-a31e-4b4a-93e4-5f571e91255a", "72f988bf-86f1-41af-91ab-2d7cd011db47"];
pub const TENANT: &str = "7c1f2b1e-0000-4000-8000-00000000c0de";

// ---------------------------------------------------------------------------------------------
// Networks: one /16 per ASN in public space, written as an ASN range table.

#[derive(Debug, Clone)]
struct Net {
    asn: i64,
    org: String,
    first: u8,
    second: u8,
}

impl Net {
    fn ip(&self, host: u64) -> String {
        format!("{}.{}.{}.{}", self.first, self.second, (host >> 8) % 256, host % 254 + 1)
    }
}

fn networks(n: usize) -> Vec<Net> {
    let named: [(i64, &str); 12] = [
        (8075, "Microsoft Corporation"),
        (16509, "Amazon.com, Inc."),
        (14618, "Amazon.com, Inc."),
        (15169, "Google LLC"),
        (396982, "Google LLC"),
        (36459, "GitHub, Inc."),
        (14061, "DigitalOcean, LLC"),
        (24940, "Hetzner Online GmbH"),
        (16276, "OVH SAS"),
        (7922, "Comcast Cable Communications, LLC"),
        (3320, "Deutsche Telekom AG"),
        (8068, "MICROSOFT-CORP-MSN-AS-BLOCK"),
    ];
    (0..n)
        .map(|k| {
            let (asn, org) = if k < named.len() {
                (named[k].0, named[k].1.to_string())
            } else {
                (1_000_000 + k as i64, format!("Network {k} Ltd"))
            };
            Net { asn, org, first: 11 + (k / 256) as u8, second: (k % 256) as u8 }
        })
        .collect()
}

/// Attacker networks used only by injected scenarios.
fn attacker_nets() -> Vec<Net> {
    vec![
        Net { asn: 65_001, org: "Bulletproof Hosting Ltd".into(), first: 45, second: 1 },
        Net { asn: 65_002, org: "Quiet Proxy Networks".into(), first: 45, second: 2 },
        Net { asn: 65_003, org: "Old Friends Transit".into(), first: 45, second: 3 },
        Net { asn: 65_004, org: "Residential Proxy Pool".into(), first: 45, second: 4 },
    ]
}

fn write_asn_table(path: &Path, nets: &[Net]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "start_ip,end_ip,asn,organization")?;
    for n in nets.iter().chain(attacker_nets().iter()) {
        writeln!(f, "{0}.{1}.0.0,{0}.{1}.255.255,{2},\"{3}\"", n.first, n.second, n.asn, n.org)?;
    }
    f.flush()
}

// ---------------------------------------------------------------------------------------------
// Principals

#[derive(Debug, Clone)]
struct Principal {
    id: String,
    app_id: String,
    name: String,
    owner: Option<&'static str>,
    weight: f64,
    /// Home addresses (ip, net index).
    homes: Vec<(String, usize)>,
}

struct Tenant {
    sps: Vec<Principal>,
    mis: Vec<Principal>,
    users: Vec<Principal>,
    nets: Vec<Net>,
    dormant: Principal,
}

/// Scenario principals (indexes into `sps`) kept out of background risk events, failures and audit.
const RESERVED: std::ops::Range<usize> = 7..15;

fn tenant(seed: u64, s: Scale) -> Tenant {
    let nets = networks(3000);
    let mut rng = Rng::new(seed, 1);
    let cloud = [1usize, 2, 3, 4, 5, 6, 7, 8];
    let mk = |rng: &mut Rng, kind: u64, i: usize, prefix: &str, n: usize| -> Principal {
        let rank = i as f64 + 1.0;
        let auto = i < n / 20 + 1;
        let home_count = if auto { 2 + rng.below(3) } else { 1 + rng.below(2) };
        let homes = (0..home_count)
            .map(|_| {
                let net = if auto || rng.chance(0.5) { *rng.pick(&cloud) } else { 12 + rng.below(2900) as usize };
                (nets[net].ip(rng.next()), net)
            })
            .collect();
        let w = WORDS[i % WORDS.len()];
        Principal {
            id: uid(seed, kind, i as u64),
            app_id: uid(seed, kind + 100, i as u64),
            name: format!("{prefix}{w}-{i}"),
            owner: None,
            weight: 1.0 / rank.powf(1.1),
            homes,
        }
    };
    let mut sps: Vec<Principal> = (0..s.sps).map(|i| mk(&mut rng, 1, i, "svc-", s.sps)).collect();
    // Microsoft first-party apps (about 8%), never the scenario principals.
    for (i, p) in sps.iter_mut().enumerate().skip(20) {
        if i % 12 == 0 {
            p.owner = Some(MS_TENANTS[i % 2]);
            p.name = format!("Microsoft {} Connector {i}", WORDS[i % WORDS.len()]);
            p.homes = vec![(nets[0].ip(i as u64), 0)];
        }
    }
    // Scenario principals get steady activity so they have history.
    for p in &mut sps[RESERVED] {
        p.weight = p.weight.max(0.02);
    }
    let mis = (0..s.mis).map(|i| mk(&mut rng, 2, i, "mi-", s.mis)).collect();
    let users = (0..s.users)
        .map(|i| {
            let mut p = mk(&mut rng, 3, i, "user", s.users);
            p.name = format!("user{i}@contoso.example");
            let net = 9 + rng.below(2) as usize;
            p.homes = vec![(nets[net].ip(rng.next()), net)];
            p
        })
        .collect();
    let dormant = Principal {
        id: uid(seed, 9, 0),
        app_id: uid(seed, 109, 0),
        name: "svc-dormant-legacy".into(),
        owner: None,
        weight: 0.0,
        homes: vec![],
    };
    Tenant { sps, mis, users, nets, dormant }
}

// ---------------------------------------------------------------------------------------------
// Records, in their export formats

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f0Z").to_string()
}

#[allow(clippy::too_many_arguments)]
fn signin(
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
fn sp_signin(id: String, t: DateTime<Utc>, p: &Principal, ip: &str, err: i64) -> Value {
    signin("ServicePrincipalSignInLogs", id, t, p, Some(ip), err, "Microsoft Graph", false)
}

fn aadsts(code: i64) -> &'static str {
    match code {
        7000215 => "Invalid client secret provided.",
        7000222 => "The provided client secret keys are expired.",
        700027 => "Client assertion failed signature validation.",
        700016 => "Application not found in the directory.",
        _ => "Other",
    }
}

/// Background directory operations: (operation, target type, weight).
const AUDIT_OPS: [(&str, &str, u64); 12] = [
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
fn audit(
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

fn graph_call(id: String, t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) -> Value {
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

fn o365(id: String, t: DateTime<Utc>, op: &str, user_id: &str, app_id: &str, ip: &str, sp_category: bool) -> Value {
    let mut v = json!({"CreationTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "Id": id, "Operation": op, "OrganizationId": TENANT,
        "RecordType": if op == "MailItemsAccessed" { 50 } else { 8 }, "ResultStatus": "Succeeded", "UserId": user_id, "UserType": if sp_category { 4 } else { 0 },
        "Workload": if op == "MailItemsAccessed" { "Exchange" } else { "AzureActiveDirectory" }, "ClientIPAddress": ip, "AppId": app_id});
    if sp_category {
        v["ExtendedProperties"] = json!([{"Name": "extendedAuditEventCategory", "Value": "ServicePrincipal"}]);
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn risk(
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

fn net_alert(t: DateTime<Utc>, flow: u64, src: &str, sig: &str, sid: u64) -> Value {
    json!({"timestamp": t.format("%Y-%m-%dT%H:%M:%S%.6f+0000").to_string(), "flow_id": flow, "event_type": "alert", "src_ip": src,
        "src_port": 40000 + flow % 20000, "dest_ip": "10.0.0.10", "dest_port": 443, "proto": "TCP",
        "alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1, "signature": sig, "category": "Misc Attack", "severity": 2}})
}

fn activity(t: DateTime<Utc>, p: &Principal, ip: &str, rng: &mut Rng) -> Value {
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

/// The category a record's file goes under.
fn category_of(v: &Value) -> &str {
    if let Some(c) = v.get("category").and_then(Value::as_str) {
        return c;
    }
    if v.get("event_type").is_some() {
        return "suricata";
    }
    "o365"
}

// ---------------------------------------------------------------------------------------------
// Sinks

trait Sink {
    fn emit(&mut self, day: &str, v: Value) -> Result<(), GenError>;
}

type RawFile = Box<dyn FinishWrite>;

trait FinishWrite: Write {
    fn finish_file(self: Box<Self>) -> std::io::Result<()>;
}

impl FinishWrite for flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>> {
    fn finish_file(self: Box<Self>) -> std::io::Result<()> {
        self.finish()?.flush()
    }
}

impl FinishWrite for std::io::BufWriter<std::fs::File> {
    fn finish_file(mut self: Box<Self>) -> std::io::Result<()> {
        self.flush()
    }
}

struct RawSink {
    root: PathBuf,
    gzip: bool,
    open: BTreeMap<String, RawFile>,
    day: String,
    files: u64,
}

impl RawSink {
    fn close_all(&mut self) -> Result<(), GenError> {
        for (path, f) in std::mem::take(&mut self.open) {
            f.finish_file().map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e })?;
        }
        Ok(())
    }
}

impl Sink for RawSink {
    fn emit(&mut self, day: &str, v: Value) -> Result<(), GenError> {
        if day != self.day {
            self.close_all()?;
            self.day = day.to_string();
        }
        let cat = category_of(&v).to_string();
        let (y, m, d) = (&day[0..4], &day[5..7], &day[8..10]);
        let dir = match cat.as_str() {
            "suricata" => self.root.join(format!("suricata/{day}")),
            "o365" => self.root.join(format!("o365/{day}")),
            c => self.root.join(format!("insights-logs-{}/y={y}/m={m}/d={d}", c.to_ascii_lowercase())),
        };
        let path = dir.join(if self.gzip { "PT24H.json.gz" } else { "PT24H.json" }).display().to_string();
        if !self.open.contains_key(&path) {
            std::fs::create_dir_all(&dir).map_err(|e| GenError::Io { path: dir.clone(), source: e })?;
            let f = std::fs::File::create(&path).map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e })?;
            let w: RawFile = if self.gzip {
                Box::new(flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::fast()))
            } else {
                Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
            };
            self.open.insert(path.clone(), w);
            self.files += 1;
        }
        let w = self.open.get_mut(&path).expect("opened");
        serde_json::to_writer(&mut *w, &v)
            .map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e.into() })?;
        w.write_all(b"\n").map_err(|e| GenError::Io { path: PathBuf::from(&path), source: e })
    }
}

struct LakeSink(RecordSink);

impl Sink for LakeSink {
    fn emit(&mut self, _day: &str, v: Value) -> Result<(), GenError> {
        self.0.push(&v)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Ground truth

/// One expectation about a detection's output.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Expectation {
    pub scenario: String,
    pub rule_id: String,
    /// `run` (the scheduled run ending at `at`), `backtest` (every run in [from, at]) or `hunt`
    /// (one window [from, at]).
    pub mode: String,
    #[serde(default)]
    pub from: Option<String>,
    pub at: String,
    /// Field values (in the alert's `fields`) that identify the finding.
    pub fields: BTreeMap<String, Value>,
    /// How many matching alerts or rows: 0 for a near miss.
    pub count: usize,
}

struct Truth(Vec<Expectation>);

impl Truth {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        scenario: &str,
        rule: &str,
        mode: &str,
        from: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        fields: Value,
        count: usize,
    ) {
        self.0.push(Expectation {
            scenario: scenario.into(),
            rule_id: rule.into(),
            mode: mode.into(),
            from: from.map(|f| f.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            fields: fields.as_object().expect("object").clone().into_iter().collect(),
            count,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The generator

/// Generates a tenant. `--as lake` must run on a blocking thread inside a Tokio runtime.
pub fn generate(o: &GenOptions, handle: tokio::runtime::Handle) -> Result<GenReport, GenError> {
    std::fs::create_dir_all(&o.out).map_err(|e| GenError::Io { path: o.out.clone(), source: e })?;
    let s = o.profile.scale();
    let t = tenant(o.seed, s);
    let asn_path = o.out.join("asn.csv");
    write_asn_table(&asn_path, &t.nets).map_err(|e| GenError::Io { path: asn_path.clone(), source: e })?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut raw_sink = None;
    let mut lake_sink = None;
    match o.output {
        GenOutput::Raw => {
            raw_sink = Some(RawSink {
                root: o.out.join("raw"),
                gzip: o.gzip,
                open: BTreeMap::new(),
                day: String::new(),
                files: 0,
            });
        }
        GenOutput::Lake => {
            let lake = Lake::open(&o.out.join("lake").display().to_string())?;
            let opts = IngestOptions {
                inputs: vec![],
                format: Format::Auto,
                asn_db: Some(asn_path.clone()),
                geo_db: None,
                keep_raw: o.keep_raw,
                progress: false,
            };
            lake_sink = Some(LakeSink(RecordSink::new(&lake, &opts, handle)?));
        }
    }
    let sink: &mut dyn Sink = match (raw_sink.as_mut(), lake_sink.as_mut()) {
        (Some(r), _) => r,
        (_, Some(l)) => l,
        _ => unreachable!("one sink is set above"),
    };
    let start = o.end - Duration::days(o.days as i64);
    let bar = progress(o.progress, o.days as u64);
    let mut truth = Truth(Vec::new());
    let mut total = 0u64;
    for d in 0..o.days as i64 {
        let day0 = start + Duration::days(d);
        let day = day0.format("%Y-%m-%d").to_string();
        let mut rng = Rng::new(o.seed, 1000 + d as u64);
        let mut emit = |v: Value, sink: &mut dyn Sink| -> Result<(), GenError> {
            *counts.entry(category_of(&v).to_string()).or_default() += 1;
            total += 1;
            sink.emit(&day, v)
        };
        let at = |rng: &mut Rng| day0 + Duration::microseconds(rng.below(86_400_000_000) as i64);
        let nid = |rng: &mut Rng, k: u64| uid(o.seed ^ rng.next(), k, d as u64);
        // Sign-ins: 60% service principals, 15% managed identities, 25% users.
        let sw: f64 = t.sps.iter().map(|p| p.weight).sum();
        for (i, p) in t.sps.iter().enumerate() {
            let n = rng.count(s.signins_per_day * 0.60 * p.weight / sw);
            for _ in 0..n {
                let ts = at(&mut rng);
                let (ip, net) = if rng.chance(0.0005) && !RESERVED.contains(&i) && p.owner.is_none() {
                    let k = 12 + rng.below(2900) as usize; // roaming to a network never used before
                    (t.nets[k].ip(rng.next()), k)
                } else {
                    let h = rng.pick(&p.homes);
                    (h.0.clone(), h.1)
                };
                let _ = net;
                let err = if !RESERVED.contains(&i) && rng.chance(0.02) {
                    *rng.pick(&[7000215i64, 7000222, 700027, 700016])
                } else {
                    0
                };
                let v = sp_signin(nid(&mut rng, 11), ts, p, &ip, err);
                emit(v, sink)?;
            }
        }
        let mw: f64 = t.mis.iter().map(|p| p.weight).sum();
        for p in &t.mis {
            for _ in 0..rng.count(s.signins_per_day * 0.15 * p.weight / mw) {
                let ts = at(&mut rng);
                emit(
                    signin("ManagedIdentitySignInLogs", nid(&mut rng, 12), ts, p, None, 0, "Azure Key Vault", false),
                    sink,
                )?;
            }
        }
        let uw: f64 = t.users.iter().map(|p| p.weight).sum();
        for p in &t.users {
            for _ in 0..rng.count(s.signins_per_day * 0.25 * p.weight / uw) {
                let ts = at(&mut rng);
                let cat = if rng.chance(0.3) { "SignInLogs" } else { "NonInteractiveUserSignInLogs" };
                let err = if rng.chance(0.03) { 50126 } else { 0 };
                let ip = p.homes[0].0.clone();
                emit(signin(cat, nid(&mut rng, 13), ts, p, Some(&ip), err, "Office 365 Exchange Online", true), sink)?;
            }
        }
        // Other events.
        let other = rng.count(s.other_per_day);
        for _ in 0..other {
            let ts = at(&mut rng);
            let r = rng.unit();
            let p = loop {
                let i = rng.below(t.sps.len() as u64) as usize;
                if !RESERVED.contains(&i) {
                    break &t.sps[i];
                }
            };
            let ip = p.homes[0].0.clone();
            let v = if r < 0.55 {
                graph_call(nid(&mut rng, 21), ts, p, &ip, &mut rng)
            } else if r < 0.75 {
                let u = rng.pick(&t.users);
                o365(nid(&mut rng, 22), ts, "MailItemsAccessed", &u.name, &p.app_id, &u.homes[0].0, false)
            } else if r < 0.78 {
                o365(nid(&mut rng, 23), ts, "Update service principal.", &p.name, &p.app_id, &ip, true)
            } else if r < 0.92 {
                activity(ts, p, &ip, &mut rng)
            } else if r < 0.99 {
                // Directory changes are mostly about users, groups and devices; changes to an
                // application's credentials are about 2% of them (hundreds a day in medium).
                let total: u64 = AUDIT_OPS.iter().map(|o| o.2).sum();
                let mut k = rng.below(total);
                let (op, ty, _) = *AUDIT_OPS
                    .iter()
                    .find(|o| {
                        let hit = k < o.2;
                        k = k.saturating_sub(o.2);
                        hit
                    })
                    .expect("k < total");
                let u = rng.pick(&t.users);
                let target = if matches!(ty, "User" | "Group" | "Device") { rng.pick(&t.users) } else { p };
                audit(
                    nid(&mut rng, 24),
                    ts,
                    op,
                    if rng.chance(0.3) { Some(p) } else { None },
                    Some(u),
                    Some(&u.homes[0].0),
                    target,
                    ty,
                )
            } else if r < 0.995 {
                let id = nid(&mut rng, 25);
                let ty = *rng.pick(&[
                    "leakedCredentials",
                    "unfamiliarFeatures",
                    "adminConfirmedServicePrincipalCompromised",
                ]);
                let v1 = risk(id.clone(), ts, ts, p, ty, "low", "atRisk", &ip);
                emit(v1, sink)?;
                // A later version of the same detection (dismissed).
                risk(id, ts, ts + Duration::minutes(30), p, ty, "low", "dismissed", &ip)
            } else {
                let src = t.nets[12 + rng.below(2900) as usize].ip(rng.next());
                net_alert(ts, rng.next() % 1_000_000_000, &src, "ET SCAN Suspicious inbound", 2_010_000 + rng.below(50))
            };
            emit(v, sink)?;
        }
        // Injected scenarios on the last day, and their history on earlier days.
        let last0 = o.end - Duration::days(1);
        scenarios(&t, o.seed, day0, last0, &mut |v| emit(v, sink), &mut truth, d == o.days as i64 - 1)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (files, ingest) = match (raw_sink, lake_sink) {
        (Some(mut r), _) => {
            r.close_all()?;
            (r.files, None)
        }
        (_, Some(LakeSink(rs))) => {
            let sum = rs.finish()?;
            (sum.parquet_files, Some(sum))
        }
        _ => unreachable!("one sink is set above"),
    };
    let gt = o.out.join("ground_truth.json");
    std::fs::write(&gt, serde_json::to_vec_pretty(&truth.0).expect("serializable"))
        .map_err(|e| GenError::Io { path: gt, source: e })?;
    Ok(GenReport { records: total, by_category: counts, files, ingest })
}

fn progress(enabled: bool, days: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(days);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} day {pos}/{len} {elapsed}").expect("valid template"),
    );
    bar
}

/// The injected attacks and near misses. History records land on earlier days; the attacks on the
/// last day (`last0` is its start). Expectations are written once, on the last day.
fn scenarios(
    t: &Tenant,
    seed: u64,
    day0: DateTime<Utc>,
    last0: DateTime<Utc>,
    emit: &mut dyn FnMut(Value) -> Result<(), GenError>,
    truth: &mut Truth,
    is_last: bool,
) -> Result<(), GenError> {
    let atk = attacker_nets();
    let h = |hh: i64, mm: i64| last0 + Duration::hours(hh) + Duration::minutes(mm);
    let sid = |k: u64| uid(seed, 500, k);
    let sp = |i: usize| &t.sps[i];
    // History: sp #10 used attacker ASN 65003 eleven days before; sp #8 used 65002 nine days before.
    if day0 == last0 - Duration::days(11) {
        emit(sp_signin(sid(1), h(10, 0) - Duration::days(11), sp(10), &atk[2].ip(9), 0))?;
    }
    if day0 == last0 - Duration::days(9) {
        emit(sp_signin(sid(2), h(10, 0) - Duration::days(9), sp(8), &atk[1].ip(9), 0))?;
    }
    if !is_last {
        return Ok(());
    }
    let run11 = h(11, 0);
    // 1. Unusual source ASN.
    emit(sp_signin(sid(10), h(10, 20), sp(7), &atk[0].ip(1), 0))?;
    truth.add(
        "sp7 signs in from a never-seen hosting ASN",
        "sp_unusual_source_asn",
        "run",
        None,
        run11,
        json!({"service_principal_id": sp(7).id, "source_asn": 65001}),
        1,
    );
    emit(sp_signin(sid(11), h(10, 30), sp(10), &atk[2].ip(2), 0))?;
    truth.add(
        "sp10 returns to an ASN unseen for 11 days",
        "sp_unusual_source_asn",
        "run",
        None,
        run11,
        json!({"service_principal_id": sp(10).id, "source_asn": 65003}),
        1,
    );
    emit(sp_signin(sid(12), h(10, 25), sp(8), &atk[1].ip(3), 0))?;
    truth.add(
        "near miss: sp8's ASN was seen 9 days ago",
        "sp_unusual_source_asn",
        "run",
        None,
        run11,
        json!({"service_principal_id": sp(8).id, "source_asn": 65002}),
        0,
    );
    emit(sp_signin(sid(13), h(10, 35), sp(9), &t.nets[0].ip(77), 0))?;
    truth.add(
        "near miss: sp9 from a Microsoft ASN",
        "sp_unusual_source_asn",
        "run",
        None,
        run11,
        json!({"service_principal_id": sp(9).id, "source_asn": 8075}),
        0,
    );
    emit(sp_signin(sid(14), h(10, 40), sp(14), &atk[3].ip(4), 7000215))?;
    truth.add(
        "near miss: sp14's new ASN sign-in failed",
        "sp_unusual_source_asn",
        "run",
        None,
        run11,
        json!({"service_principal_id": sp(14).id, "source_asn": 65004}),
        0,
    );
    // 2. Rare action from multiple IPs (audit events initiated by sp #11).
    for k in 0..3u64 {
        let ip = atk[3].ip(20 + k);
        emit(audit(
            sid(20 + k),
            h(12, 5 * k as i64),
            "Add app role assignment grant to user",
            Some(sp(11)),
            None,
            Some(&ip),
            sp(11),
            "ServicePrincipal",
        ))?;
    }
    truth.add("sp11 grants app roles 3 times from 3 IPs", "sp_rare_action_multiple_ips", "hunt", Some(last0), last0 + Duration::days(1),
        json!({"action": "Add app role assignment grant to user", "service_principal_name": sp(11).name, "ip_count": 3}), 1);
    // 3. Failed sign-ins with a wrong secret.
    for k in 0..6u64 {
        emit(sp_signin(sid(30 + k), h(13, k as i64), sp(12), &atk[0].ip(30), 7000215))?;
    }
    truth.add("sp12: six invalid-secret failures from one IP", "sp_failed_signins", "run", None, last0 + Duration::days(1),
        json!({"service_principal_name": sp(12).name, "source_ip": atk[0].ip(30), "error_code": 7000215, "attempts": 6}), 1);
    // 4. Credential added to a principal that was signing in; near miss on a dormant one.
    let admin = &t.users[3];
    emit(audit(
        sid(40),
        h(14, 0),
        "Add service principal credentials",
        None,
        Some(admin),
        Some(&atk[0].ip(40)),
        sp(7),
        "ServicePrincipal",
    ))?;
    truth.add(
        "credential added to sp7 (signing in)",
        "sp_credential_added_after_signin",
        "run",
        None,
        last0 + Duration::days(1),
        json!({"audit_id": sid(40)}),
        1,
    );
    emit(audit(
        sid(41),
        h(14, 10),
        "Add service principal credentials",
        None,
        Some(admin),
        Some(&atk[0].ip(41)),
        &t.dormant,
        "ServicePrincipal",
    ))?;
    truth.add(
        "near miss: credential added to a dormant principal",
        "sp_credential_added_after_signin",
        "run",
        None,
        last0 + Duration::days(1),
        json!({"audit_id": sid(41)}),
        0,
    );
    // 5. Risk event stacking on sp #13 with a sign-in from outside any allowlist; near miss sp #14.
    emit(risk(sid(50), h(15, 10), h(15, 10), sp(13), "maliciousIPAddress", "high", "atRisk", &atk[0].ip(50)))?;
    emit(risk(sid(51), h(15, 20), h(15, 20), sp(13), "leakedCredentials", "medium", "atRisk", &atk[0].ip(50)))?;
    emit(sp_signin(sid(52), h(15, 30), sp(13), &atk[0].ip(50), 0))?;
    truth.add(
        "sp13: malicious IP + leaked credentials + sign-in",
        "sp_risk_event_stacking",
        "run",
        None,
        h(16, 0),
        json!({"service_principal_id": sp(13).id, "severity": "Critical"}),
        1,
    );
    emit(risk(sid(53), h(15, 15), h(15, 15), sp(14), "unfamiliarFeatures", "medium", "atRisk", &atk[1].ip(53)))?;
    truth.add(
        "near miss: one medium risk event on sp14",
        "sp_risk_event_stacking",
        "run",
        None,
        h(16, 0),
        json!({"service_principal_id": sp(14).id}),
        0,
    );
    // 6. Suspicious source: network alert + user sign-in + mail access from one public IP; near miss
    //    from a private address.
    let victim = &t.users[5];
    for (ip, tag) in [(atk[3].ip(60), "public"), ("10.20.30.40".to_string(), "private")] {
        emit(net_alert(h(16, 10), 4242, &ip, "ET TOR Known Tor Exit Node Traffic", 2_029_340))?;
        emit(signin(
            "SignInLogs",
            sid(if tag == "public" { 61 } else { 63 }),
            h(16, 20),
            victim,
            Some(&ip),
            0,
            "Office 365 Exchange Online",
            true,
        ))?;
        emit(o365(
            sid(if tag == "public" { 62 } else { 64 }),
            h(16, 30),
            "MailItemsAccessed",
            &victim.name,
            &victim.app_id,
            &ip,
            false,
        ))?;
    }
    truth.add(
        "alerted IP signs in and reads mail",
        "identity_signin_from_suspicious_source",
        "backtest",
        Some(h(16, 0)),
        last0 + Duration::days(1),
        json!({"source_ip": atk[3].ip(60)}),
        1,
    );
    truth.add(
        "near miss: the same from a private IP",
        "identity_signin_from_suspicious_source",
        "backtest",
        Some(h(16, 0)),
        last0 + Duration::days(1),
        json!({"source_ip": "10.20.30.40"}),
        0,
    );
    Ok(())
}

/// Checks a lake against a ground-truth file: returns one message per failed expectation.
pub async fn check_ground_truth(
    ctx: &datafusion::prelude::SessionContext,
    truth: &[Expectation],
) -> Result<Vec<String>, crate::rules::RuleError> {
    use crate::rules::{alerts, load_all};
    let rules = load_all(None)?;
    let p = |s: &str| DateTime::parse_from_rfc3339(s).expect("ground truth times are RFC 3339").with_timezone(&Utc);
    let mut failures = Vec::new();
    for e in truth {
        let rule = rules
            .iter()
            .find(|r| r.meta.id == e.rule_id)
            .ok_or_else(|| crate::rules::RuleError::Unknown(e.rule_id.clone()))?;
        let at = p(&e.at);
        let res = match e.mode.as_str() {
            "run" => alerts::run(ctx, rule, &rule.window_ending(at)?, at).await?,
            "hunt" => {
                alerts::run(ctx, rule, &alerts::RunWindow { start: p(e.from.as_deref().unwrap_or(&e.at)), end: at }, at)
                    .await?
            }
            _ => alerts::backtest(ctx, rule, p(e.from.as_deref().unwrap_or(&e.at)), at, at).await?,
        };
        let n = res
            .alerts
            .iter()
            .filter(|a| {
                let f: Value = serde_json::from_str(&a.fields).unwrap_or(Value::Null);
                e.fields.iter().all(|(k, v)| f.get(k) == Some(v))
            })
            .count();
        if n != e.count {
            failures.push(format!("{} ({}): expected {} matching alert(s), found {n}", e.scenario, e.rule_id, e.count));
        }
    }
    Ok(failures)
}
