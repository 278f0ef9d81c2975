//! The typed reader's Microsoft 365 audit records (the Office 365 Management Activity API's, one
//! per line: `{"CreationTime", "Id", "Operation", "Workload", …}`), read as `entra::from_o365`
//! reads them when `formats::detect` finds one. It declines what it is not sure of: a key the
//! general path could take for one it looks up, a key of another export shape (`time`,
//! `category`, `@timestamp`, `TimeGenerated`, an envelope's…), extended properties that are not
//! empty, a nested value where text is read.

use super::*;

// The record's keys `entra::from_o365` reads, and (as other names) the keys that would make
// `formats::detect` or `envelope::items` read the record as something else.
typed_props!(O365Record, o365_names, "an Office 365 audit record",
    extra: ["time", "category", "@timestamp", "ecs", "event.ingested", "event_type", "TimeGenerated",
            "Type", "records", "expected", "value", "hits", "_source"], {
    id: Scalar<'a> = "Id",
    office_id: Scalar<'a> = "OfficeId",
    organization_id: Scalar<'a> = "OrganizationId",
    record_type: Scalar<'a> = "RecordType",
    workload: Scalar<'a> = "Workload",
    office_workload: Scalar<'a> = "OfficeWorkload",
    operation: Scalar<'a> = "Operation",
    result_status: Scalar<'a> = "ResultStatus",
    user_id: Scalar<'a> = "UserId",
    user_type: Scalar<'a> = "UserType",
    application_id: Scalar<'a> = "ApplicationId",
    app_id: Scalar<'a> = "AppId",
    client_app_id: Scalar<'a> = "ClientAppId",
    client_ip: Scalar<'a> = "ClientIP",
    client_ip_address: Scalar<'a> = "ClientIPAddress",
    actor_ip_address: Scalar<'a> = "ActorIpAddress",
    creation_time: Scalar<'a> = "CreationTime",
    extended_properties: NoneOrEmpty = "ExtendedProperties",
});

/// `ExtendedProperties` that give no property: null or an empty list (any other value is a reason
/// to give up).
#[derive(Default)]
struct NoneOrEmpty;

impl<'de> de::Deserialize<'de> for NoneOrEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NoneOrEmpty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null or an empty list")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NoneOrEmpty)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                match seq.next_element::<IgnoredAny>()? {
                    None => Ok(NoneOrEmpty),
                    Some(_) => Err(de::Error::custom("extended properties")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

column_indexes! {
    /// The M365 audit table's columns the typed reader sets, found once.
    O365Cols, o365_cols, Table::O365Audit,
    [
        id,
        organization_id,
        record_type,
        workload,
        operation,
        result_status,
        user_id,
        user_type,
        app_id,
        client_app_id,
        source_ip,
        extended_properties,
        outcome,
    ]
}

/// The row of an Office 365 audit line, as `map_record` would make it, or `None` when the record
/// should take the general path (`room`: as [`diagnostic_compact_with`]'s).
pub(super) fn compact(line: &str, room: usize) -> Option<CompactMapped> {
    let mut q = O365Record::default();
    super::super::json::from_str_seed(line, Fill(&mut q)).ok()?;
    // `formats::detect`: an O365 record has both (an ECS, Suricata, Log Analytics or diagnostic
    // record's keys made the reader give up).
    if matches!(q.creation_time, Scalar::Absent) || matches!(q.operation, Scalar::Absent) {
        return None;
    }
    row(&q, room).ok()
}

fn row(q: &O365Record, room: usize) -> Result<CompactMapped, Unsure> {
    let c = o365_cols();
    let mut r = CompactRow::new(Table::O365Audit, room);
    let id = first(&[&q.id, &q.office_id]).text()?;
    r.set_opt_str(c.id, id.as_deref());
    text(&mut r, c.organization_id, &q.organization_id)?;
    text(&mut r, c.record_type, &q.record_type)?;
    text(&mut r, c.workload, first(&[&q.workload, &q.office_workload]))?;
    text(&mut r, c.operation, &q.operation)?;
    let status = q.result_status.text_cow()?;
    r.set_opt_str(c.result_status, status.as_deref());
    text(&mut r, c.user_id, &q.user_id)?;
    text(&mut r, c.user_type, &q.user_type)?;
    text(&mut r, c.app_id, first(&[&q.application_id, &q.app_id]))?;
    text(&mut r, c.client_app_id, &q.client_app_id)?;
    // `source_ip`: the first of the three that holds an address.
    let ip = first_address(&[&q.client_ip, &q.client_ip_address, &q.actor_ip_address])?;
    r.set_opt_str(c.source_ip, ip.as_deref());
    r.set_empty_list(c.extended_properties);
    let outcome = status.and_then(|s| match s.to_ascii_lowercase().as_str() {
        "succeeded" | "success" | "true" | "partiallysucceeded" => Some("success"),
        "failed" | "failure" | "false" => Some("failure"),
        _ => None,
    });
    r.set_opt_str(c.outcome, outcome);
    let ts = q.creation_time.time().ok_or(Unsure)?;
    if !crate::time::in_range(ts) {
        return Err(Unsure);
    }
    Ok(CompactMapped { table: Table::O365Audit, ts, id, row: r })
}
