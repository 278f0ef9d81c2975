//! The background of every day: sign-ins of service principals, managed identities and users,
//! and the other events (Graph calls, O365 audit, Azure activity, Key Vault requests, directory
//! changes, risk events, network alerts), with heavy-tailed activity per principal.

use super::records::{activity, audit, graph_call, kv_request, net_alert, o365, risk, SignIn, AUDIT_OPS};
use super::tenant::{uid, Rng, Tenant, RESERVED};
use super::{GenError, Out, Scale};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// One generated day: its randomness and where its records go.
pub(super) struct Day<'a> {
    pub(super) seed: u64,
    pub(super) index: i64,
    pub(super) start: DateTime<Utc>,
    pub(super) name: String,
    pub(super) rng: Rng,
    pub(super) out: &'a mut Out,
}

impl Day<'_> {
    /// A random time of the day.
    fn at(&mut self) -> DateTime<Utc> {
        self.start + Duration::microseconds(self.rng.below(86_400_000_000) as i64)
    }

    /// A fresh record id of kind `k`.
    fn nid(&mut self, k: u64) -> String {
        uid(self.seed ^ self.rng.next(), k, self.index as u64)
    }

    pub(super) fn emit(&mut self, v: Value) -> Result<(), GenError> {
        self.out.emit(&self.name, v)
    }

    /// A record of `category` written as text by `write` (no JSON tree is built).
    fn emit_text(&mut self, category: &str, mut write: impl FnMut(&mut String)) -> Result<(), GenError> {
        self.out.emit_text(&self.name, category, &mut write)
    }

    /// A sign-in (see [`SignIn::write`]).
    fn emit_signin(&mut self, s: SignIn) -> Result<(), GenError> {
        self.emit_text(s.category, |b| s.write(b))
    }
}

/// Sign-ins: 60% service principals, 15% managed identities, 25% users.
pub(super) fn signins(day: &mut Day, t: &Tenant, s: Scale) -> Result<(), GenError> {
    let sw: f64 = t.sps.iter().map(|p| p.weight).sum();
    for (i, p) in t.sps.iter().enumerate() {
        let n = day.rng.count(s.signins_per_day * 0.60 * p.weight / sw);
        for _ in 0..n {
            let ts = day.at();
            let ip = if day.rng.chance(0.0005) && !RESERVED.contains(&i) && p.owner.is_none() {
                let k = 12 + day.rng.below(2900) as usize; // roaming to a network never used before
                t.nets[k].ip(day.rng.next())
            } else {
                day.rng.pick(&p.homes).0.clone()
            };
            let err = if !RESERVED.contains(&i) && day.rng.chance(0.02) {
                *day.rng.pick(&[7000215i64, 7000222, 700027, 700016])
            } else {
                0
            };
            let id = day.nid(11);
            let category = "ServicePrincipalSignInLogs";
            let ip = Some(ip.as_str());
            let resource = "Microsoft Graph";
            day.emit_signin(SignIn {
                category,
                id: &id,
                t: ts,
                principal: p,
                ip,
                error_code: err,
                resource,
                user: false,
            })?;
        }
    }
    let mw: f64 = t.mis.iter().map(|p| p.weight).sum();
    for p in &t.mis {
        for _ in 0..day.rng.count(s.signins_per_day * 0.15 * p.weight / mw) {
            let ts = day.at();
            let id = day.nid(12);
            let category = "ManagedIdentitySignInLogs";
            let resource = "Azure Key Vault";
            day.emit_signin(SignIn {
                category,
                id: &id,
                t: ts,
                principal: p,
                ip: None,
                error_code: 0,
                resource,
                user: false,
            })?;
        }
    }
    let uw: f64 = t.users.iter().map(|p| p.weight).sum();
    for p in &t.users {
        for _ in 0..day.rng.count(s.signins_per_day * 0.25 * p.weight / uw) {
            let ts = day.at();
            let cat = if day.rng.chance(0.3) { "SignInLogs" } else { "NonInteractiveUserSignInLogs" };
            let err = if day.rng.chance(0.03) { 50126 } else { 0 };
            let ip = p.homes[0].0.clone();
            let id = day.nid(13);
            let (ip, resource) = (Some(ip.as_str()), "Office 365 Exchange Online");
            day.emit_signin(SignIn {
                category: cat,
                id: &id,
                t: ts,
                principal: p,
                ip,
                error_code: err,
                resource,
                user: true,
            })?;
        }
    }
    Ok(())
}

/// A Key Vault read: two in three by a managed identity from its VM's private address (through a
/// private endpoint, as in seed 002), the rest by the service principal from its home address,
/// now and then from another of its homes; a few are refused (403). Each principal uses one of
/// 40 vaults.
fn key_vault(
    day: &mut Day,
    t: &Tenant,
    ts: DateTime<Utc>,
    p: &super::tenant::Principal,
    ip: &str,
) -> Result<(), GenError> {
    let ops = ["SecretGet", "SecretGet", "SecretGet", "SecretList", "KeyUnwrap", "CertificateGet"];
    let op = *day.rng.pick(&ops);
    let status = if day.rng.chance(0.01) { 403 } else { 200 };
    let id = day.nid(26);
    let (oid, app_id, from, vault) = if day.rng.chance(0.66) && !t.mis.is_empty() {
        let k = day.rng.below(t.mis.len() as u64) as usize;
        let mi = &t.mis[k];
        (&mi.id, &mi.app_id, format!("10.{}.{}.4", 20 + k / 250, k % 250), format!("KV-{:02}", k % 40))
    } else {
        let from = if day.rng.chance(0.02) { day.rng.pick(&p.homes).0.clone() } else { ip.to_string() };
        (&p.id, &p.app_id, from, format!("KV-{:02}", p.id.bytes().map(u64::from).sum::<u64>() % 40))
    };
    day.emit_text("AuditEvent", |b| kv_request(b, &id, ts, oid, app_id, &from, op, &vault, status))
}

/// Graph calls, O365 audit, Azure activity, directory changes, risk events and network alerts.
pub(super) fn other_events(day: &mut Day, t: &Tenant, s: Scale) -> Result<(), GenError> {
    let other = day.rng.count(s.other_per_day);
    for _ in 0..other {
        let ts = day.at();
        let r = day.rng.unit();
        let p = loop {
            let i = day.rng.below(t.sps.len() as u64) as usize;
            if !RESERVED.contains(&i) {
                break &t.sps[i];
            }
        };
        let ip = p.homes[0].0.clone();
        if r < 0.55 {
            let id = day.nid(21);
            let Day { out, name, rng, .. } = &mut *day;
            out.emit_text(name, "MicrosoftGraphActivityLogs", &mut |b| graph_call(b, &id, ts, p, &ip, rng))?;
        } else if r < 0.75 {
            let u = day.rng.pick(&t.users);
            let id = day.nid(22);
            day.emit_text("o365", |b| o365(b, &id, ts, "MailItemsAccessed", &u.name, &p.app_id, &u.homes[0].0, false))?;
        } else if r < 0.78 {
            let id = day.nid(23);
            day.emit_text("o365", |b| o365(b, &id, ts, "Update service principal.", &p.name, &p.app_id, &ip, true))?;
        } else if r < 0.86 {
            let Day { out, name, rng, .. } = &mut *day;
            out.emit_text(name, "Administrative", &mut |b| activity(b, ts, p, &ip, rng))?;
        } else if r < 0.92 {
            key_vault(day, t, ts, p, &ip)?;
        } else if r < 0.99 {
            // Directory changes are mostly about users, groups and devices; changes to an
            // application's credentials are about 2% of them (hundreds a day in medium).
            let total: u64 = AUDIT_OPS.iter().map(|o| o.2).sum();
            let mut k = day.rng.below(total);
            let (op, ty, _) = *AUDIT_OPS
                .iter()
                .find(|o| {
                    let hit = k < o.2;
                    k = k.saturating_sub(o.2);
                    hit
                })
                .expect("k < total");
            let u = day.rng.pick(&t.users);
            let target = if matches!(ty, "User" | "Group" | "Device") { day.rng.pick(&t.users) } else { p };
            let id = day.nid(24);
            let by_sp = if day.rng.chance(0.3) { Some(p) } else { None };
            day.emit_text("AuditLogs", |b| audit(b, &id, ts, op, by_sp, Some(u), Some(&u.homes[0].0), target, ty))?;
        } else if r < 0.995 {
            let id = day.nid(25);
            let ty = *day.rng.pick(&[
                "leakedCredentials",
                "unfamiliarFeatures",
                "adminConfirmedServicePrincipalCompromised",
            ]);
            let cat = "ServicePrincipalRiskEvents";
            day.emit_text(cat, |b| risk(b, &id, ts, ts, p, ty, "low", "atRisk", &ip))?;
            // A later version of the same detection (dismissed).
            day.emit_text(cat, |b| risk(b, &id, ts, ts + Duration::minutes(30), p, ty, "low", "dismissed", &ip))?;
        } else {
            let src = t.nets[12 + day.rng.below(2900) as usize].ip(day.rng.next());
            let flow = day.rng.next() % 1_000_000_000;
            let sid = 2_010_000 + day.rng.below(50);
            day.emit_text("suricata", |b| net_alert(b, ts, flow, &src, "ET SCAN Suspicious inbound", sid))?;
        }
    }
    Ok(())
}
