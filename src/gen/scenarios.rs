//! The injected attacks and their near misses, one function per scenario. History records land on
//! earlier days; the attacks on the last day (`last0` is its start). Expectations are written once,
//! on the last day. The order of records is part of the generator's output: keep it.

use super::records::{audit, net_alert, o365, risk, sp_signin, tree, SignIn};
use super::tenant::{attacker_nets, uid, Net, Principal, Tenant};
use super::truth::{Check, Expect, Truth};
use super::GenError;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

type Emit<'a> = &'a mut dyn FnMut(Value) -> Result<(), GenError>;

/// What every scenario works with.
struct Ctx<'a> {
    t: &'a Tenant,
    seed: u64,
    last0: DateTime<Utc>,
    atk: Vec<Net>,
}

impl Ctx<'_> {
    /// `hh:mm` on the last day.
    fn h(&self, hh: i64, mm: i64) -> DateTime<Utc> {
        self.last0 + Duration::hours(hh) + Duration::minutes(mm)
    }
    /// A scenario record id.
    fn sid(&self, k: u64) -> String {
        uid(self.seed, 500, k)
    }
    fn sp(&self, i: usize) -> &Principal {
        &self.t.sps[i]
    }
    fn end(&self) -> DateTime<Utc> {
        self.last0 + Duration::days(1)
    }
}

/// Emits the scenarios' records that belong to `day0`, and on the last day their expectations.
pub(super) fn inject(
    t: &Tenant,
    seed: u64,
    day0: DateTime<Utc>,
    last0: DateTime<Utc>,
    emit: Emit,
    truth: &mut Truth,
    is_last: bool,
) -> Result<(), GenError> {
    let c = Ctx { t, seed, last0, atk: attacker_nets() };
    history(&c, day0, emit)?;
    if !is_last {
        return Ok(());
    }
    unusual_source_asn(&c, emit, truth)?;
    rare_action_from_multiple_ips(&c, emit, truth)?;
    failed_signins_wrong_secret(&c, emit, truth)?;
    credential_added_after_signin(&c, emit, truth)?;
    risk_event_stacking(&c, emit, truth)?;
    signin_from_suspicious_source(&c, emit, truth)?;
    Ok(())
}

/// sp #10 used attacker ASN 65003 eleven days before the attack day; sp #8 used 65002 nine days
/// before.
fn history(c: &Ctx, day0: DateTime<Utc>, emit: Emit) -> Result<(), GenError> {
    if day0 == c.last0 - Duration::days(11) {
        emit(sp_signin(c.sid(1), c.h(10, 0) - Duration::days(11), c.sp(10), &c.atk[2].ip(9), 0))?;
    }
    if day0 == c.last0 - Duration::days(9) {
        emit(sp_signin(c.sid(2), c.h(10, 0) - Duration::days(9), c.sp(8), &c.atk[1].ip(9), 0))?;
    }
    Ok(())
}

fn unusual_source_asn(c: &Ctx, emit: Emit, truth: &mut Truth) -> Result<(), GenError> {
    let run11 = Check::Run(c.h(11, 0));
    let rule = "sp_unusual_source_asn";
    let mut expect = |scenario, i: usize, asn: i64, count| {
        truth.add(Expect {
            scenario,
            rule,
            check: run11,
            fields: json!({"service_principal_id": c.sp(i).id, "source_asn": asn}),
            count,
        })
    };
    emit(sp_signin(c.sid(10), c.h(10, 20), c.sp(7), &c.atk[0].ip(1), 0))?;
    expect("sp7 signs in from a never-seen hosting ASN", 7, 65001, 1);
    emit(sp_signin(c.sid(11), c.h(10, 30), c.sp(10), &c.atk[2].ip(2), 0))?;
    expect("sp10 returns to an ASN unseen for 11 days", 10, 65003, 1);
    emit(sp_signin(c.sid(12), c.h(10, 25), c.sp(8), &c.atk[1].ip(3), 0))?;
    expect("near miss: sp8's ASN was seen 9 days ago", 8, 65002, 0);
    emit(sp_signin(c.sid(13), c.h(10, 35), c.sp(9), &c.t.nets[0].ip(77), 0))?;
    expect("near miss: sp9 from a Microsoft ASN", 9, 8075, 0);
    emit(sp_signin(c.sid(14), c.h(10, 40), c.sp(14), &c.atk[3].ip(4), 7000215))?;
    expect("near miss: sp14's new ASN sign-in failed", 14, 65004, 0);
    Ok(())
}

/// Audit events initiated by sp #11: the same rare action three times from three addresses.
fn rare_action_from_multiple_ips(c: &Ctx, emit: Emit, truth: &mut Truth) -> Result<(), GenError> {
    for k in 0..3u64 {
        let ip = c.atk[3].ip(20 + k);
        emit(tree(|b| {
            audit(
                b,
                &c.sid(20 + k),
                c.h(12, 5 * k as i64),
                "Add app role assignment grant to user",
                Some(c.sp(11)),
                None,
                Some(&ip),
                c.sp(11),
                "ServicePrincipal",
            )
        }))?;
    }
    truth.add(Expect {
        scenario: "sp11 grants app roles 3 times from 3 IPs",
        rule: "sp_rare_action_multiple_ips",
        check: Check::Hunt { from: c.last0, to: c.end() },
        fields: json!({"action": "Add app role assignment grant to user", "service_principal_name": c.sp(11).name, "ip_count": 3}),
        count: 1,
    });
    Ok(())
}

fn failed_signins_wrong_secret(c: &Ctx, emit: Emit, truth: &mut Truth) -> Result<(), GenError> {
    for k in 0..6u64 {
        emit(sp_signin(c.sid(30 + k), c.h(13, k as i64), c.sp(12), &c.atk[0].ip(30), 7000215))?;
    }
    truth.add(Expect {
        scenario: "sp12: six invalid-secret failures from one IP",
        rule: "sp_failed_signins",
        check: Check::Run(c.end()),
        fields: json!({"service_principal_name": c.sp(12).name, "source_ip": c.atk[0].ip(30), "error_code": 7000215, "attempts": 6}),
        count: 1,
    });
    truth.add(Expect {
        scenario: "sp12: invalid-secret failures from an address it never signed in from",
        rule: "sp_credential_failures_from_new_source",
        check: Check::Run(c.h(14, 0)),
        fields: json!({"service_principal_id": c.sp(12).id, "source_ips": [c.atk[0].ip(30)]}),
        count: 1,
    });
    Ok(())
}

/// A credential added to a principal that was signing in; the near miss on a dormant one.
fn credential_added_after_signin(c: &Ctx, emit: Emit, truth: &mut Truth) -> Result<(), GenError> {
    let admin = &c.t.users[3];
    let rule = "sp_credential_added_after_signin";
    emit(tree(|b| {
        audit(
            b,
            &c.sid(40),
            c.h(14, 0),
            "Add service principal credentials",
            None,
            Some(admin),
            Some(&c.atk[0].ip(40)),
            c.sp(7),
            "ServicePrincipal",
        )
    }))?;
    truth.add(Expect {
        scenario: "credential added to sp7 (signing in)",
        rule,
        check: Check::Run(c.end()),
        fields: json!({"audit_id": c.sid(40)}),
        count: 1,
    });
    emit(tree(|b| {
        audit(
            b,
            &c.sid(41),
            c.h(14, 10),
            "Add service principal credentials",
            None,
            Some(admin),
            Some(&c.atk[0].ip(41)),
            &c.t.dormant,
            "ServicePrincipal",
        )
    }))?;
    truth.add(Expect {
        scenario: "near miss: credential added to a dormant principal",
        rule,
        check: Check::Run(c.end()),
        fields: json!({"audit_id": c.sid(41)}),
        count: 0,
    });
    Ok(())
}

/// Risk events stacking on sp #13 with a sign-in from outside any allowlist; near miss sp #14.
fn risk_event_stacking(c: &Ctx, emit: Emit, truth: &mut Truth) -> Result<(), GenError> {
    let (h, sid, sp, atk) = (|a, b| c.h(a, b), |k| c.sid(k), |i| c.sp(i), &c.atk);
    let rule = "sp_risk_event_stacking";
    emit(tree(|b| {
        risk(b, &sid(50), h(15, 10), h(15, 10), sp(13), "maliciousIPAddress", "high", "atRisk", &atk[0].ip(50))
    }))?;
    emit(tree(|b| {
        risk(b, &sid(51), h(15, 20), h(15, 20), sp(13), "leakedCredentials", "medium", "atRisk", &atk[0].ip(50))
    }))?;
    emit(sp_signin(sid(52), h(15, 30), sp(13), &atk[0].ip(50), 0))?;
    truth.add(Expect {
        scenario: "sp13: malicious IP + leaked credentials + sign-in",
        rule,
        check: Check::Run(h(16, 0)),
        fields: json!({"service_principal_id": sp(13).id, "severity": "Critical"}),
        count: 1,
    });
    emit(tree(|b| {
        risk(b, &sid(53), h(15, 15), h(15, 15), sp(14), "unfamiliarFeatures", "medium", "atRisk", &atk[1].ip(53))
    }))?;
    truth.add(Expect {
        scenario: "near miss: one medium risk event on sp14",
        rule,
        check: Check::Run(h(16, 0)),
        fields: json!({"service_principal_id": sp(14).id}),
        count: 0,
    });
    Ok(())
}

/// A network alert, a user sign-in and mail access from one public address; the near miss from a
/// private address.
fn signin_from_suspicious_source(c: &Ctx, emit: Emit, truth: &mut Truth) -> Result<(), GenError> {
    let victim = &c.t.users[5];
    let public = c.atk[3].ip(60);
    for (ip, tag) in [(public.clone(), "public"), ("10.20.30.40".to_string(), "private")] {
        emit(tree(|b| net_alert(b, c.h(16, 10), 4242, &ip, "ET TOR Known Tor Exit Node Traffic", 2_029_340)))?;
        let id = c.sid(if tag == "public" { 61 } else { 63 });
        let resource = "Office 365 Exchange Online";
        let s = SignIn {
            category: "SignInLogs",
            id: &id,
            t: c.h(16, 20),
            principal: victim,
            ip: Some(&ip),
            error_code: 0,
            resource,
            user: true,
        };
        emit(s.value())?;
        emit(tree(|b| {
            o365(
                b,
                &c.sid(if tag == "public" { 62 } else { 64 }),
                c.h(16, 30),
                "MailItemsAccessed",
                &victim.name,
                &victim.app_id,
                &ip,
                false,
            )
        }))?;
    }
    let rule = "identity_signin_from_suspicious_source";
    let check = || Check::Backtest { from: c.h(16, 0), to: c.end() };
    truth.add(Expect {
        scenario: "alerted IP signs in and reads mail",
        rule,
        check: check(),
        fields: json!({"source_ip": public}),
        count: 1,
    });
    truth.add(Expect {
        scenario: "near miss: the same from a private IP",
        rule,
        check: check(),
        fields: json!({"source_ip": "10.20.30.40"}),
        count: 0,
    });
    Ok(())
}
