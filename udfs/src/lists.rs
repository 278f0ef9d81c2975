//! `list_field(list, 'name')`: the named field of each struct in a list of structs, as a list of
//! the same length (a null struct gives a null element; a null list, a null list).
//!
//! DataFusion reads a field of one struct (`s['name']`, `get_field`), not of every struct in a
//! list. A query that needs several lists ordered alike (the keys a credential change added: their
//! ids, types and names, ordered by id) aggregates one list of structs, sorts it once
//! (`array_sort` orders structs field by field) and takes each field with this function. Three
//! `array_agg(… ORDER BY …)` cost DataFusion a sort per group in every batch; one unordered
//! `array_agg` is vectorized.

use crate::functions::{all_scalar, finish, is_string, plain_udf, scalar_str};
use arrow::array::{make_array, Array, AsArray, ListArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, internal_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

plain_udf!(
    /// The SQL function: a list of structs and a constant field name; a list of that field.
    ListField
);

/// The field name: a constant, non-null string.
fn field_name(v: Option<&ScalarValue>) -> Result<String> {
    match v.and_then(scalar_str) {
        Some(Some(s)) => Ok(s.to_string()),
        _ => plan_err!("list_field(list, name): the name must be a constant string, e.g. list_field(keys, 'id')"),
    }
}

/// The struct fields of a `List(Struct)` type.
fn struct_fields(t: &DataType) -> Result<&arrow::datatypes::Fields> {
    match t {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(fields) => Ok(fields),
            other => plan_err!("list_field(list, name): the list must hold structs, not {other}"),
        },
        other => plan_err!("list_field(list, name): the first argument must be a list of structs, not {other}"),
    }
}

impl ScalarUDFImpl for ListField {
    fn name(&self) -> &str {
        "list_field"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [list, name] if is_string(name) => {
                struct_fields(list)?;
                Ok(arg_types.to_vec())
            }
            _ => plan_err!("list_field(list, name) takes a list of structs and a field name, got {arg_types:?}"),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("list_field's type depends on its name argument: return_field_from_args")
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let name = field_name(args.scalar_arguments.get(1).copied().flatten())?;
        let fields = struct_fields(args.arg_fields[0].data_type())?;
        let Some((_, field)) = fields.find(&name) else {
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return plan_err!("list_field(list, '{name}'): the structs have no field '{name}' (they have {names:?})");
        };
        let item = Arc::new(Field::new_list_field(field.data_type().clone(), true));
        Ok(Arc::new(Field::new(self.name(), DataType::List(item), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(v) => field_name(Some(v))?,
            ColumnarValue::Array(_) => return exec_err!("list_field(list, name): the name must be a constant"),
        };
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let arr = args.args[0].to_array(n)?;
        let Some(list) = arr.as_list_opt::<i32>() else {
            return exec_err!("list_field(list, name): expected a list, got {}", arr.data_type());
        };
        let Some(structs) = list.values().as_struct_opt() else {
            return exec_err!("list_field(list, name): expected a list of structs, got {}", arr.data_type());
        };
        let Some(child) = structs.column_by_name(&name) else {
            return exec_err!("list_field(list, '{name}'): the structs have no field '{name}'");
        };
        // A null struct's field is null, whatever the child holds at its position.
        let nulls = NullBuffer::union(child.nulls(), structs.nulls());
        let child = make_array(child.to_data().into_builder().nulls(nulls).build()?);
        let item = Arc::new(Field::new_list_field(child.data_type().clone(), true));
        let out = ListArray::try_new(item, list.offsets().clone(), child, list.nulls().cloned())?;
        finish(Arc::new(out), scalar)
    }
}
