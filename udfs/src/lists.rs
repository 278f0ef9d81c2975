//! `list_field(list, 'name')`: the named field of each struct in a list of structs, as a list of
//! the same length (a null struct gives a null element; a null list, a null list).
//!
//! DataFusion reads a field of one struct (`s['name']`, `get_field`), not of every struct in a
//! list. A query that needs several lists ordered alike (the keys a credential change added: their
//! ids, types and names, ordered by id) aggregates one list of structs, sorts it once
//! (`array_sort` orders structs field by field) and takes each field with this function. Three
//! `array_agg(… ORDER BY …)` cost DataFusion a sort per group in every batch; one unordered
//! `array_agg` is vectorized.
//!
//! `list_where(list, 'name', value)`: the structs of a list whose named field equals a constant
//! string, in their order (a null struct or a null field never matches; a null list gives a null
//! list). What `unnest`, a filter and a regrouping by row would give, without them: a query that
//! needs one entry of a list of key/value pairs (`array_min(list_field(list_where(details,
//! 'key', 'AppId'), 'value'))`) reads its table once, where a join of its unnested entries back
//! to its rows plans the table's scan again.

use crate::functions::{all_scalar, finish, is_string, plain_udf, scalar_str};
use arrow::array::{make_array, Array, AsArray, BooleanArray, ListArray, StringArray};
use arrow::buffer::NullBuffer;
use arrow::buffer::OffsetBuffer;
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

plain_udf!(
    /// The SQL function: a list of structs, a constant field name and a constant string; the
    /// structs whose field equals it.
    ListWhere
);

/// The field name: a constant, non-null string. `call` is how the function is written in the
/// error (`list_field(list, name)`), `example` a call with a name.
fn field_name(call: &str, example: &str, v: Option<&ScalarValue>) -> Result<String> {
    match v.and_then(scalar_str) {
        Some(Some(s)) => Ok(s.to_string()),
        _ => plan_err!("{call}: the name must be a constant string, e.g. {example}"),
    }
}

/// The struct fields of a `List(Struct)` type (`call` as in [`field_name`]).
fn struct_fields<'a>(call: &str, t: &'a DataType) -> Result<&'a arrow::datatypes::Fields> {
    match t {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(fields) => Ok(fields),
            other => plan_err!("{call}: the list must hold structs, not {other}"),
        },
        other => plan_err!("{call}: the first argument must be a list of structs, not {other}"),
    }
}

/// `list_field` as its errors name it.
const LIST_FIELD: (&str, &str) = ("list_field(list, name)", "list_field(keys, 'id')");
/// `list_where` as its errors name it.
const LIST_WHERE: (&str, &str) = ("list_where(list, name, value)", "list_where(details, 'key', 'AppId')");

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
                struct_fields(LIST_FIELD.0, list)?;
                Ok(arg_types.to_vec())
            }
            _ => plan_err!("list_field(list, name) takes a list of structs and a field name, got {arg_types:?}"),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("list_field's type depends on its name argument: return_field_from_args")
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let name = field_name(LIST_FIELD.0, LIST_FIELD.1, args.scalar_arguments.get(1).copied().flatten())?;
        let fields = struct_fields(LIST_FIELD.0, args.arg_fields[0].data_type())?;
        let Some((_, field)) = fields.find(&name) else {
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return plan_err!("list_field(list, '{name}'): the structs have no field '{name}' (they have {names:?})");
        };
        let item = Arc::new(Field::new_list_field(field.data_type().clone(), true));
        Ok(Arc::new(Field::new(self.name(), DataType::List(item), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(v) => field_name(LIST_FIELD.0, LIST_FIELD.1, Some(v))?,
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

/// The constant string `list_where` compares with (null: nothing matches).
fn wanted_value(v: Option<&ScalarValue>) -> Result<Option<String>> {
    match v.and_then(scalar_str) {
        Some(s) => Ok(s.map(str::to_string)),
        None => plan_err!("{}: the value must be a constant string, e.g. {}", LIST_WHERE.0, LIST_WHERE.1),
    }
}

impl ScalarUDFImpl for ListWhere {
    fn name(&self) -> &str {
        "list_where"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            // The field's type is checked where the name is known (return_field_from_args).
            [list @ DataType::List(item), name, value]
                if matches!(item.data_type(), DataType::Struct(_)) && is_string(name) && is_string(value) =>
            {
                Ok(vec![list.clone(), DataType::Utf8, DataType::Utf8])
            }
            _ => plan_err!(
                "list_where(list, name, value) takes a list of structs, a field name and a string, got {arg_types:?}"
            ),
        }
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let name = field_name(LIST_WHERE.0, LIST_WHERE.1, args.scalar_arguments.get(1).copied().flatten())?;
        // The value is checked where it is known to be a constant (invoke: a column is refused
        // there; `CAST(NULL AS VARCHAR)` is not a literal yet when this is asked).
        let fields = struct_fields(LIST_WHERE.0, args.arg_fields[0].data_type())?;
        match fields.find(&name) {
            Some((_, f)) if is_string(f.data_type()) => {}
            Some((_, f)) => {
                return plan_err!(
                    "list_where(list, '{name}', value): the field '{name}' is {}, not a string",
                    f.data_type()
                )
            }
            None => {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                return plan_err!(
                    "list_where(list, '{name}', value): the structs have no field '{name}' (they have {names:?})"
                );
            }
        }
        Ok(Arc::new(Field::new(self.name(), args.arg_fields[0].data_type().clone(), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (name, value) = match (&args.args[1], &args.args[2]) {
            (ColumnarValue::Scalar(n), ColumnarValue::Scalar(v)) => {
                (field_name(LIST_WHERE.0, LIST_WHERE.1, Some(n))?, wanted_value(Some(v))?)
            }
            _ => return exec_err!("list_where(list, name, value): the name and the value must be constants"),
        };
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let arr = args.args[0].to_array(n)?;
        let Some(list) = arr.as_list_opt::<i32>() else {
            return exec_err!("list_where(list, name, value): expected a list, got {}", arr.data_type());
        };
        let Some(structs) = list.values().as_struct_opt() else {
            return exec_err!("list_where(list, name, value): expected a list of structs, got {}", arr.data_type());
        };
        let Some(child) = structs.column_by_name(&name) else {
            return exec_err!("list_where(list, '{name}', value): the structs have no field '{name}'");
        };
        // Which structs match: a present struct whose field equals the value.
        let keep: BooleanArray = match value {
            None => BooleanArray::from(vec![false; child.len()]),
            Some(v) => {
                let field = arrow::compute::cast(child, &DataType::Utf8)?;
                let want = StringArray::new_scalar(v);
                let eq = arrow::compute::kernels::cmp::eq(&field, &want)?;
                let present = NullBuffer::union(eq.nulls(), structs.nulls());
                let bits = match present {
                    Some(p) => eq.values() & p.inner(),
                    None => eq.values().clone(),
                };
                BooleanArray::new(bits, None)
            }
        };
        // Each list's new length: the matches within its old bounds.
        let offsets = list.offsets();
        let mut lengths = Vec::with_capacity(list.len());
        for w in offsets.windows(2) {
            let (start, end) = (w[0] as usize, w[1] as usize);
            lengths.push(keep.values().slice(start, end - start).count_set_bits());
        }
        // The values outside every list's bounds (a sliced list) are dropped with the filter.
        let first = offsets[0] as usize;
        let last = offsets[list.len()] as usize;
        let values = structs.slice(first, last - first);
        let keep = keep.slice(first, last - first);
        let kept = arrow::compute::filter(&values, &keep)?;
        let item = match list.data_type() {
            DataType::List(item) => item.clone(),
            other => return exec_err!("list_where(list, name, value): expected a list, got {other}"),
        };
        let out = ListArray::try_new(item, OffsetBuffer::from_lengths(lengths), kept, list.nulls().cloned())?;
        finish(Arc::new(out), scalar)
    }
}
