//! Lake rows (JSON values in a table's column order, as the ingest mappers build them) to Arrow.

use super::{LakeError, Table};
use arrow::array::{ArrayRef, PrimitiveBuilder, RecordBatch};
use arrow::datatypes::{ArrowPrimitiveType, DataType, TimeUnit};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::sync::Arc;

/// Converts rows (in the table's column order) to a batch in arrival order. Columns of plain types
/// are built directly; lists, structs and any value not of its column's type go through arrow-json
/// (which coerces or rejects them as it always did).
pub fn rows_to_batch(table: Table, rows: &[Vec<Value>]) -> Result<RecordBatch, LakeError> {
    let werr = |e: arrow::error::ArrowError| LakeError::Write { table: table.name(), msg: e.to_string() };
    let schema = table.schema();
    let mut cols: Vec<Option<ArrayRef>> = Vec::with_capacity(schema.fields().len());
    let mut rest = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let col = direct_column(f.data_type(), rows, i);
        if col.is_none() {
            rest.push(i);
        }
        cols.push(col);
    }
    if !rest.is_empty() {
        let sub = Arc::new(schema.project(&rest).map_err(werr)?);
        let names: Vec<&'static str> = rest.iter().map(|&i| table.columns()[i]).collect();
        let ser: Vec<RowSerSome> = rows.iter().map(|r| RowSerSome(&names, &rest, r)).collect();
        let mut decoder = arrow::json::ReaderBuilder::new(sub.clone())
            .with_batch_size(rows.len().max(1))
            .build_decoder()
            .map_err(werr)?;
        decoder.serialize(&ser).map_err(werr)?;
        let decoded = decoder.flush().map_err(werr)?.unwrap_or_else(|| RecordBatch::new_empty(sub));
        for (k, &i) in rest.iter().enumerate() {
            cols[i] = Some(decoded.column(k).clone());
        }
    }
    let cols = cols.into_iter().map(|c| c.expect("every column built")).collect();
    RecordBatch::try_new(schema, cols).map_err(werr)
}

/// The columns `idx` of a row, by name, nulls left out.
struct RowSerSome<'a>(&'a [&'static str], &'a [usize], &'a [Value]);

impl Serialize for RowSerSome<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, &i) in self.0.iter().zip(self.1) {
            if !self.2[i].is_null() {
                m.serialize_entry(k, &self.2[i])?;
            }
        }
        m.end()
    }
}

/// Column `i` of `rows` built directly when its type is plain and every value is of that type.
fn direct_column(ty: &DataType, rows: &[Vec<Value>], i: usize) -> Option<ArrayRef> {
    use arrow::array::{
        BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
    };
    let vals = rows.iter().map(|r| &r[i]);
    Some(match ty {
        DataType::Utf8 => {
            let bytes = vals.clone().map(|v| v.as_str().map_or(0, str::len)).sum();
            let mut b = StringBuilder::with_capacity(rows.len(), bytes);
            for v in vals {
                match v {
                    Value::String(s) => b.append_value(s),
                    Value::Null => b.append_null(),
                    _ => return None,
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => primitive(Int64Builder::with_capacity(rows.len()), vals, Value::as_i64)?,
        DataType::Int32 => {
            primitive(Int32Builder::with_capacity(rows.len()), vals, |v| i32::try_from(v.as_i64()?).ok())?
        }
        DataType::Float64 => primitive(Float64Builder::with_capacity(rows.len()), vals, Value::as_f64)?,
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for v in vals {
                match v {
                    Value::Null => b.append_null(),
                    v => b.append_value(v.as_bool()?),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => primitive(
            TimestampMicrosecondBuilder::with_capacity(rows.len()).with_data_type(ty.clone()),
            vals,
            Value::as_i64,
        )?,
        _ => return None,
    })
}

/// A primitive column: nulls as nulls, every other value through `get` (None: not of the type).
fn primitive<'a, T: ArrowPrimitiveType>(
    mut b: PrimitiveBuilder<T>,
    vals: impl Iterator<Item = &'a Value>,
    get: impl Fn(&Value) -> Option<T::Native>,
) -> Option<ArrayRef> {
    for v in vals {
        match v {
            Value::Null => b.append_null(),
            v => b.append_value(get(v)?),
        }
    }
    Some(Arc::new(b.finish()))
}
