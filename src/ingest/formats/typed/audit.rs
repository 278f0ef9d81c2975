//! The typed reader's Entra audit records in diagnostic-settings form (`{"time", "category":
//! "AuditLogs", "properties": {…}, …}`), read as `entra::audit` reads them: the initiator, the
//! additional details and the target resources with their modified properties — lists of
//! structs a compact row holds as lists of cells (`CompactRow::push_list`). It declines what it
//! is not sure of: a key the general path could take for one it looks up, a nested object or
//! list written as a JSON string (which the general path parses), a list that is not an array of
//! objects, a float where text is read.

use super::*;
use crate::lake::rows::Cell;

// The properties `entra::audit` reads.
typed_props!(pub(super) AuditProps, audit_names, "an audit properties object", extra: [], {
    id: Scalar<'a> = "id",
    tenant_id: Scalar<'a> = "tenantId",
    correlation_id: Scalar<'a> = "correlationId",
    category: Scalar<'a> = "category",
    activity_display_name: Scalar<'a> = "activityDisplayName",
    operation_name: Scalar<'a> = "operationName",
    operation_type: Scalar<'a> = "operationType",
    aad_operation_type: Scalar<'a> = "AADOperationType",
    result: Scalar<'a> = "result",
    result_reason: Scalar<'a> = "resultReason",
    result_description: Scalar<'a> = "resultDescription",
    logged_by_service: Scalar<'a> = "loggedByService",
    initiated_by: Option<Nested<Box<InitiatedBy<'a>>>> = "initiatedBy",
    additional_details: Objects<Detail<'a>> = "additionalDetails",
    user_agent: Scalar<'a> = "userAgent",
    target_resources: Objects<Target<'a>> = "targetResources",
    activity_date_time: Scalar<'a> = "activityDateTime",
});

typed_props!(InitiatedBy, initiated_by_names, "an initiatedBy object", extra: [], {
    user: Option<Nested<Box<Initiator<'a>>>> = "user",
    app: Option<Nested<Box<Initiator<'a>>>> = "app",
});

// The user's and the app's fields (each reads its own; a key of the other's is only not read).
typed_props!(Initiator, initiator_names, "an initiator object", extra: [], {
    id: Scalar<'a> = "id",
    user_principal_name: Scalar<'a> = "userPrincipalName",
    app_id: Scalar<'a> = "appId",
    display_name: Scalar<'a> = "displayName",
    service_principal_id: Scalar<'a> = "servicePrincipalId",
    service_principal_name: Scalar<'a> = "servicePrincipalName",
    ip_address: Scalar<'a> = "ipAddress",
});

typed_props!(Detail, detail_names, "an additional detail", extra: [], {
    key: Scalar<'a> = "key",
    value: Scalar<'a> = "value",
});

typed_props!(Target, target_names, "a target resource", extra: [], {
    id: Scalar<'a> = "id",
    display_name: Scalar<'a> = "displayName",
    type_: Scalar<'a> = "type",
    user_principal_name: Scalar<'a> = "userPrincipalName",
    modified_properties: Objects<Modified<'a>> = "modifiedProperties",
});

typed_props!(Modified, modified_names, "a modified property", extra: [], {
    display_name: Scalar<'a> = "displayName",
    name: Scalar<'a> = "name",
    old_value: Scalar<'a> = "oldValue",
    new_value: Scalar<'a> = "newValue",
});

/// A list of objects as `entra::list_of_objects` reads one: null (or absent) → none; an array →
/// its objects, its nulls skipped. Anything else (an object, text the general path would parse,
/// an item that is neither) is a reason to give up.
pub(super) struct Objects<T>(Vec<Box<T>>);

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects(Vec::new())
    }
}

impl<'de, T: Default> de::Deserialize<'de> for Objects<T>
where
    for<'r> Fill<'r, T>: de::DeserializeSeed<'de, Value = ()>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Default> Visitor<'de> for V<T>
        where
            for<'r> Fill<'r, T>: de::DeserializeSeed<'de, Value = ()>,
        {
            type Value = Objects<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of objects or null")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Objects::default())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<Nested<Box<T>>>()? {
                    if let Nested::Object(o) = item {
                        out.push(o);
                    }
                }
                Ok(Objects(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

column_indexes! {
    /// The audit table's columns the typed reader sets, found once.
    AuditCols, audit_cols, Table::Audit,
    [
        id,
        tenant_id,
        correlation_id,
        category,
        operation_name,
        operation_type,
        result,
        result_reason,
        logged_by_service,
        initiated_by_user_id,
        initiated_by_upn,
        initiated_by_app_id,
        initiated_by_app_name,
        initiated_by_sp_id,
        initiated_by_sp_name,
        source_ip,
        user_agent,
        target_id,
        target_name,
        target_type,
        targets,
        additional_details,
    ]
}

/// The object a nested field holds, if it is one (null and absent alike: none).
fn object<T>(n: &Option<Nested<Box<T>>>) -> Option<&T> {
    match n {
        Some(Nested::Object(o)) => Some(o),
        _ => None,
    }
}

/// `entra::audit` over the typed properties.
pub(super) fn row(top: &Top, q: &AuditProps, room: usize) -> Result<CompactMapped, Unsure> {
    let c = audit_cols();
    let mut r = CompactRow::new(Table::Audit, room);
    let id = q.id.text()?;
    r.set_opt_str(c.id, id.as_deref());
    or_env(&mut r, c.tenant_id, &q.tenant_id, &top.tenant_id)?;
    or_env(&mut r, c.correlation_id, &q.correlation_id, &top.correlation_id)?;
    text(&mut r, c.category, &q.category)?;
    or_env(&mut r, c.operation_name, first(&[&q.activity_display_name, &q.operation_name]), &top.operation_name)?;
    text(&mut r, c.operation_type, first(&[&q.operation_type, &q.aad_operation_type]))?;
    text(&mut r, c.result, &q.result)?;
    text(&mut r, c.result_reason, first(&[&q.result_reason, &q.result_description]))?;
    text(&mut r, c.logged_by_service, &q.logged_by_service)?;
    let init = object(&q.initiated_by);
    let user = init.and_then(|i| object(&i.user));
    let app = init.and_then(|i| object(&i.app));
    if let Some(u) = user {
        text(&mut r, c.initiated_by_user_id, &u.id)?;
        text(&mut r, c.initiated_by_upn, &u.user_principal_name)?;
    }
    if let Some(a) = app {
        text(&mut r, c.initiated_by_app_id, &a.app_id)?;
        text(&mut r, c.initiated_by_app_name, &a.display_name)?;
        text(&mut r, c.initiated_by_sp_id, &a.service_principal_id)?;
        text(&mut r, c.initiated_by_sp_name, &a.service_principal_name)?;
    }
    // `source_ip`: the caller's address, else the user's, else the app's, the first that parses.
    let no = Scalar::Absent;
    let ip = first_address(&[&top.caller_ip, user.map_or(&no, |u| &u.ip_address), app.map_or(&no, |a| &a.ip_address)])?;
    r.set_opt_str(c.source_ip, ip.as_deref());
    // The user agent: the property, else the value of the first detail keyed `User-Agent` that
    // has one.
    let mut ua = q.user_agent.text_cow()?;
    let mut details = Vec::with_capacity(q.additional_details.0.len());
    for d in &q.additional_details.0 {
        let (k, v) = (d.key.text_cow()?, d.value.text_cow()?);
        if ua.is_none() && k.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("User-Agent")) {
            ua = v.clone();
        }
        details.push(vec![r.text_cell(k.as_deref()), r.text_cell(v.as_deref())]);
    }
    r.set_opt_str(c.user_agent, ua.as_deref());
    let mut targets = Vec::with_capacity(q.target_resources.0.len());
    for (k, t) in q.target_resources.0.iter().enumerate() {
        let mut mods = Vec::with_capacity(t.modified_properties.0.len());
        for m in &t.modified_properties.0 {
            let name = first(&[&m.display_name, &m.name]).text_cow()?;
            let (old, new) = (m.old_value.text_cow()?, m.new_value.text_cow()?);
            mods.push(vec![r.text_cell(name.as_deref()), r.text_cell(old.as_deref()), r.text_cell(new.as_deref())]);
        }
        let mods = if mods.is_empty() { Cell::EmptyList } else { r.push_list(mods) };
        let (tid, name, ty) = (t.id.text_cow()?, t.display_name.text_cow()?, t.type_.text_cow()?);
        if k == 0 {
            r.set_opt_str(c.target_id, tid.as_deref());
            r.set_opt_str(c.target_name, name.as_deref());
            r.set_opt_str(c.target_type, ty.as_deref());
        }
        let upn = t.user_principal_name.text_cow()?;
        targets.push(vec![
            r.text_cell(tid.as_deref()),
            r.text_cell(name.as_deref()),
            r.text_cell(ty.as_deref()),
            r.text_cell(upn.as_deref()),
            mods,
        ]);
    }
    for (col, items) in [(c.targets, targets), (c.additional_details, details)] {
        if items.is_empty() {
            r.set_empty_list(col);
        } else {
            let list = r.push_list(items);
            r.set_list(col, list);
        }
    }
    let ts = event_time(&q.activity_date_time, top)?;
    Ok(CompactMapped { table: Table::Audit, ts, id, row: r })
}
