//! The table schemas of the lake contract (`../shared/SCHEMA.md`): one definition per table, used
//! by the writer, the session (reader) and rule lint.

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, OnceLock};

/// The tables of a wisp lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Signins,
    Audit,
    SpRiskEvents,
    UserRisk,
    GraphActivity,
    O365Audit,
    AzureActivity,
    NetworkAlerts,
    ResourceLogs,
}

pub const ALL_TABLES: [Table; 9] = [
    Table::Signins,
    Table::Audit,
    Table::SpRiskEvents,
    Table::UserRisk,
    Table::GraphActivity,
    Table::O365Audit,
    Table::AzureActivity,
    Table::NetworkAlerts,
    Table::ResourceLogs,
];

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Signins => "signins",
            Table::Audit => "audit",
            Table::SpRiskEvents => "sp_risk_events",
            Table::UserRisk => "user_risk",
            Table::GraphActivity => "graph_activity",
            Table::O365Audit => "o365_audit",
            Table::AzureActivity => "azure_activity",
            Table::NetworkAlerts => "network_alerts",
            Table::ResourceLogs => "resource_logs",
        }
    }

    pub fn from_name(s: &str) -> Option<Table> {
        ALL_TABLES.into_iter().find(|t| t.name() == s)
    }

    /// Column names of the file schema, in order (without the `day` partition column).
    pub fn columns(self) -> &'static [&'static str] {
        static COLS: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
        let all = COLS.get_or_init(|| {
            ALL_TABLES
                .iter()
                .map(|t| t.schema().fields().iter().map(|f| &*Box::leak(f.name().clone().into_boxed_str())).collect())
                .collect()
        });
        &all[self as usize]
    }

    /// Index of a column in the file schema.
    pub fn col(self, name: &str) -> Option<usize> {
        self.columns().iter().position(|c| *c == name)
    }

    /// The Parquet file schema (no `day`: that is the partition folder).
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        SCHEMAS.get_or_init(|| ALL_TABLES.iter().map(|t| Arc::new(build(*t))).collect())[self as usize].clone()
    }

    /// The table schema as queried: file schema plus `day`.
    pub fn table_schema(self) -> SchemaRef {
        let mut fields: Vec<Field> = self.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("day", DataType::Utf8, false));
        Arc::new(Schema::new(fields))
    }
}

pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}
fn i32f(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}
fn tsf(name: &str) -> Field {
    Field::new(name, ts_type(), true)
}
fn list_of(name: &str, item: DataType) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", item, true))), true)
}
fn strs(names: &[&str]) -> Vec<Field> {
    names.iter().map(|n| s(n)).collect()
}

fn common() -> Vec<Field> {
    vec![
        Field::new("ts", ts_type(), false),
        Field::new("ingested_at", ts_type(), false),
        s("raw"),
        // Added column: the record's de-duplication key (a 64-bit hash of its id within the table).
        Field::new("_key", DataType::Int64, false),
    ]
}

pub fn name_value_fields(k: &str, v: &str) -> Fields {
    Fields::from(vec![s(k), s(v)])
}

pub fn target_fields() -> Fields {
    let modified = DataType::Struct(Fields::from(strs(&["name", "old_value", "new_value"])));
    Fields::from(vec![
        s("id"),
        s("display_name"),
        s("type"),
        s("user_principal_name"),
        list_of("modified_properties", modified),
    ])
}

fn build(t: Table) -> Schema {
    let mut f = common();
    match t {
        Table::Signins => {
            f.extend(strs(&[
                "category",
                "id",
                "tenant_id",
                "correlation_id",
                "unique_token_id",
                "service_principal_id",
                "service_principal_name",
                "app_id",
                "app_display_name",
                "app_owner_tenant_id",
                "user_id",
                "user_principal_name",
                "resource_id",
                "resource_display_name",
                "source_ip",
            ]));
            f.push(i64f("source_asn"));
            f.extend(strs(&["source_as_org", "country", "city"]));
            f.push(i64f("error_code"));
            f.extend(strs(&["failure_reason", "client_credential_type", "credential_key_id", "user_agent"]));
            f.push(Field::new("is_interactive", DataType::Boolean, true));
            f.extend(strs(&["operation_name", "resource_tenant_id", "home_tenant_id"]));
        }
        Table::Audit => {
            f.extend(strs(&[
                "id",
                "tenant_id",
                "correlation_id",
                "category",
                "operation_name",
                "operation_type",
                "result",
                "result_reason",
                "logged_by_service",
                "initiated_by_user_id",
                "initiated_by_upn",
                "initiated_by_app_id",
                "initiated_by_app_name",
                "initiated_by_sp_id",
                "initiated_by_sp_name",
                "source_ip",
            ]));
            f.push(i64f("source_asn"));
            f.extend(strs(&["source_as_org", "user_agent", "target_id", "target_name", "target_type"]));
            f.push(list_of("targets", DataType::Struct(target_fields())));
            f.push(list_of("additional_details", DataType::Struct(name_value_fields("key", "value"))));
        }
        Table::SpRiskEvents => {
            f.extend(strs(&[
                "id",
                "request_id",
                "correlation_id",
                "service_principal_id",
                "service_principal_name",
                "app_id",
                "risk_event_type",
                "risk_level",
                "risk_state",
                "risk_detail",
                "detection_timing_type",
                "activity",
                "source",
                "token_issuer_type",
            ]));
            f.push(tsf("activity_time"));
            f.push(tsf("last_updated"));
            f.extend(strs(&["source_ip", "country", "city"]));
            f.push(list_of("key_ids", DataType::Utf8));
            f.extend(strs(&["additional_info", "tenant_id"]));
        }
        Table::UserRisk => {
            f.extend(strs(&[
                "category",
                "id",
                "tenant_id",
                "user_id",
                "user_principal_name",
                "user_display_name",
                "risk_event_type",
                "risk_level",
                "risk_state",
                "risk_detail",
                "detection_timing_type",
                "activity",
                "source",
                "source_ip",
                "country",
                "city",
            ]));
            f.push(tsf("last_updated"));
        }
        Table::GraphActivity => {
            f.extend(strs(&[
                "id",
                "operation_id",
                "tenant_id",
                "app_id",
                "service_principal_id",
                "user_id",
                "source_ip",
                "source_as_org",
                "request_method",
                "request_uri",
                "sign_in_activity_id",
                "roles",
                "scopes",
                "wids",
                "user_agent",
            ]));
            f.extend([i64f("source_asn"), i64f("response_size_bytes"), i64f("duration_ms")]);
            f.extend([i32f("response_status_code"), i32f("client_auth_method")]);
        }
        Table::O365Audit => {
            f.extend(strs(&[
                "id",
                "organization_id",
                "record_type",
                "workload",
                "operation",
                "result_status",
                "user_id",
                "user_type",
                "app_id",
                "client_app_id",
                "source_ip",
                "source_as_org",
                "extended_audit_event_category",
                "outcome",
            ]));
            f.push(i64f("source_asn"));
            f.push(list_of("extended_properties", DataType::Struct(name_value_fields("name", "value"))));
        }
        Table::AzureActivity => {
            f.extend(strs(&[
                "id",
                "correlation_id",
                "operation_name",
                "category",
                "result_type",
                "result_signature",
                "caller",
                "caller_ip",
                "caller_app_id",
                "resource_id",
                "subscription_id",
                "resource_group",
                "resource_provider",
                "level",
            ]));
            // Added columns: the caller address's ASN, from the ASN database at ingest.
            f.push(i64f("source_asn"));
            f.push(s("source_as_org"));
        }
        Table::NetworkAlerts => {
            f.extend(strs(&[
                "id",
                "source_ip",
                "destination_ip",
                "rule_id",
                "rule_name",
                "severity",
                "category",
                "provider",
            ]));
            f.extend([i32f("source_port"), i32f("destination_port")]);
        }
        Table::ResourceLogs => {
            f.extend(strs(&[
                "id",
                "category",
                "operation_name",
                "operation_version",
                "resource_id",
                "resource_provider",
                "resource_type",
                "resource_name",
                "subscription_id",
                "resource_group",
                "result_type",
                "result_signature",
                "result_description",
            ]));
            f.push(i32f("status_code"));
            f.push(i64f("duration_ms"));
            f.extend(strs(&[
                "correlation_id",
                "caller_ip",
                "caller_object_id",
                "caller_app_id",
                "caller_upn",
                "caller_tenant_id",
                "user_agent",
            ]));
            f.push(i64f("source_asn"));
            f.push(s("source_as_org"));
        }
    }
    Schema::new(f)
}

/// The `alerts` schema of SCHEMA.md (what detections output).
pub fn alerts_schema() -> SchemaRef {
    Arc::new(Schema::new(alert_fields()))
}

/// The scheduler's alert store (`<state>/alerts/day=…`): the `alerts` columns, then the values of
/// the rule's `suppress_by` columns (NULL for rules without suppression).
pub fn stored_alerts_schema() -> SchemaRef {
    let mut f = alert_fields();
    f.push(Field::new("suppress_key", DataType::Utf8, true));
    Arc::new(Schema::new(f))
}

/// Suppressed repeats (`<state>/suppressed/day=…`): the alert that was not sent, and the id of the
/// alert that stood (`suppressed_by`).
pub fn suppressed_alerts_schema() -> SchemaRef {
    let mut f = stored_alerts_schema().fields().iter().map(|f| f.as_ref().clone()).collect::<Vec<_>>();
    f.push(Field::new("suppressed_by", DataType::Utf8, true));
    Arc::new(Schema::new(f))
}

fn alert_fields() -> Vec<Field> {
    let ts = ts_type();
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    vec![
        Field::new("alert_id", DataType::Utf8, false),
        s("rule_id"),
        s("rule_name"),
        s("severity"),
        Field::new("risk_score", DataType::Int32, true),
        Field::new("ts", ts.clone(), true),
        Field::new("window_start", ts.clone(), true),
        Field::new("window_end", ts.clone(), true),
        Field::new("detected_at", ts, true),
        s("service_principal_id"),
        s("service_principal_name"),
        s("app_id"),
        s("source_ip"),
        Field::new("source_asn", DataType::Int64, true),
        s("fields"),
    ]
}
