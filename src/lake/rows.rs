//! Lake rows (JSON values in a table's column order, as the ingest mappers build them) to Arrow.

use super::{LakeError, Table};
use arrow::array::builder::{make_view, NullBufferBuilder};
use arrow::array::{ArrayRef, PrimitiveBuilder, RecordBatch, StringViewArray};
use arrow::buffer::Buffer;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Schema, SchemaRef, TimeUnit};
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

/// One cell of a [`CompactRow`]: text is a range of the row's buffer, or (`Ext`) of a text
/// outside the row that the conversions are given (an ingest chunk's lines: the `raw` record is
/// not copied into the row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell {
    Null,
    Str(u32, u32),
    Ext(u32, u32),
    Int(i64),
    Bool(bool),
    /// An empty list (a list column's value that is not null).
    EmptyList,
    /// A list of structs: list `n` of the row's lists ([`CompactRow::push_list`]).
    List(u32),
}

/// A row of plain cells (text, integers, booleans) whose text lives in one buffer: two
/// allocations per row where a row of `Value`s takes one per string, and converted to Arrow
/// without visiting a `Value`. The typed readers build these; [`CompactRow::to_values`] gives the
/// row of `Value`s it stands for, and [`compact_rows_to_batch`] the batch [`rows_to_batch`] would
/// make of those.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactRow {
    table: Table,
    text: String,
    cells: Vec<Cell>,
    /// The row's lists of structs (an Entra audit record's targets, and their modified
    /// properties): each item its struct's fields in order, as text cells of the row's buffer,
    /// nulls, or lists (`Cell::List`). None allocated for a row without.
    lists: Vec<Vec<Vec<Cell>>>,
}

impl CompactRow {
    /// An empty (all null) row of `table`, with room for `text` bytes of text.
    pub fn new(table: Table, text: usize) -> Self {
        CompactRow {
            table,
            text: String::with_capacity(text),
            cells: vec![Cell::Null; table.columns().len()],
            lists: Vec::new(),
        }
    }

    /// A cell of text kept in the row's buffer (null for `None`), for a struct's field
    /// ([`CompactRow::push_list`]).
    pub fn text_cell(&mut self, s: Option<&str>) -> Cell {
        match s {
            Some(s) => {
                let start = self.text.len() as u32;
                self.text.push_str(s);
                Cell::Str(start, self.text.len() as u32)
            }
            None => Cell::Null,
        }
    }

    /// A list of structs, each item its fields' cells in the struct's order (text from
    /// [`CompactRow::text_cell`], nulls, nested lists from this function): the cell that stands
    /// for it, to set in a list column ([`CompactRow::set_list`]) or an item's list field.
    pub fn push_list(&mut self, items: Vec<Vec<Cell>>) -> Cell {
        self.lists.push(items);
        Cell::List((self.lists.len() - 1) as u32)
    }

    /// A list column's value: a cell [`CompactRow::push_list`] made.
    pub fn set_list(&mut self, i: usize, list: Cell) {
        debug_assert!(matches!(list, Cell::List(_)), "a list cell");
        self.cells[i] = list;
    }

    pub fn set_str(&mut self, i: usize, s: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        self.cells[i] = Cell::Str(start, self.text.len() as u32);
    }

    /// Text that is bytes `start..end` of the external text the conversions are given
    /// ([`CompactRow::to_values_in`], [`compact_rows_to_batch`]), not copied into the row.
    /// False (and the cell unchanged) when the range does not fit the cell (past 4 GiB).
    #[must_use]
    pub fn set_ext(&mut self, i: usize, start: usize, end: usize) -> bool {
        let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(end)) else { return false };
        self.cells[i] = Cell::Ext(s, e);
        true
    }

    /// Text, or null for `None`.
    pub fn set_opt_str(&mut self, i: usize, s: Option<&str>) {
        match s {
            Some(s) => self.set_str(i, s),
            None => self.cells[i] = Cell::Null,
        }
    }

    pub fn set_int(&mut self, i: usize, v: i64) {
        self.cells[i] = Cell::Int(v);
    }

    pub fn set_opt_int(&mut self, i: usize, v: Option<i64>) {
        self.cells[i] = v.map_or(Cell::Null, Cell::Int);
    }

    pub fn set_opt_bool(&mut self, i: usize, v: Option<bool>) {
        self.cells[i] = v.map_or(Cell::Null, Cell::Bool);
    }

    /// An empty list, not null.
    pub fn set_empty_list(&mut self, i: usize) {
        self.cells[i] = Cell::EmptyList;
    }

    /// Whether any cell is a range of the external text.
    pub fn has_ext(&self) -> bool {
        self.cells.iter().any(|c| matches!(c, Cell::Ext(..)))
    }

    pub fn is_null(&self, i: usize) -> bool {
        self.cells[i] == Cell::Null
    }

    /// The integer of cell `i` (None when it is not one).
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.cells[i] {
            Cell::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The text of cell `i` (None when it is not text).
    pub fn str(&self, i: usize) -> Option<&str> {
        match self.cells[i] {
            Cell::Str(a, b) => Some(&self.text[a as usize..b as usize]),
            _ => None,
        }
    }

    /// Bytes the row holds (for buffer budgets).
    pub fn size(&self) -> usize {
        let cell = std::mem::size_of::<Cell>();
        let lists: usize = self
            .lists
            .iter()
            .map(|l| {
                l.capacity() * std::mem::size_of::<Vec<Cell>>() + l.iter().map(|i| i.capacity() * cell).sum::<usize>()
            })
            .sum();
        self.text.capacity() + self.cells.capacity() * cell + lists
    }

    /// The row as `Value`s: text as strings, integers as numbers, booleans, nulls.
    pub fn to_values(&self) -> Vec<Value> {
        self.to_values_in("")
    }

    /// [`CompactRow::to_values`] of a row whose external cells are ranges of `ext`.
    pub fn to_values_in(&self, ext: &str) -> Vec<Value> {
        let schema = self.table.schema();
        (0..self.cells.len()).map(|i| self.value(self.cells[i], schema.field(i).data_type(), ext)).collect()
    }

    /// A cell as a `Value`: a list of structs as an array of objects keyed by the fields of
    /// `ty`, the column's (or struct field's) type.
    fn value(&self, c: Cell, ty: &DataType, ext: &str) -> Value {
        match c {
            Cell::Null => Value::Null,
            Cell::Str(a, b) => Value::String(self.text[a as usize..b as usize].to_string()),
            Cell::Ext(s, e) => Value::String(external(ext, s, e).to_string()),
            Cell::Int(n) => Value::from(n),
            Cell::Bool(b) => Value::Bool(b),
            Cell::EmptyList => Value::Array(Vec::new()),
            Cell::List(n) => {
                let fields = match ty {
                    DataType::List(item) => match item.data_type() {
                        DataType::Struct(fields) => fields.clone(),
                        _ => Default::default(),
                    },
                    _ => Default::default(),
                };
                let items = &self.lists[n as usize];
                Value::Array(
                    items
                        .iter()
                        .map(|item| {
                            let o = fields
                                .iter()
                                .zip(item)
                                .map(|(f, &c)| (f.name().clone(), self.value(c, f.data_type(), ext)));
                            Value::Object(o.collect())
                        })
                        .collect(),
                )
            }
        }
    }
}

/// Bytes `s..e` of the external text (a range a row was given from it: a bug otherwise).
fn external(ext: &str, s: u32, e: u32) -> &str {
    ext.get(s as usize..e as usize).expect("an external cell is a range of the text its conversion is given")
}

/// Rows converted at a time, column by column: their cells and text (about 2 KB a row on the
/// sign-ins) stay in L2 while every column is read from them.
const COLUMN_BLOCK: usize = 128;

/// The batch [`rows_to_batch`] makes of the rows' [`CompactRow::to_values`], built straight from
/// the cells when every cell is of its column's plain type (text in Utf8, integers in Int64 or
/// timestamp columns or within range in Int32, booleans in Boolean), else through the values;
/// `ext` is the text the rows' external cells are ranges of ("" when they have none).
pub fn compact_rows_to_batch(table: Table, rows: &[CompactRow], ext: &str) -> Result<RecordBatch, LakeError> {
    compact_rows_to_batch_in(table, rows, ext, None)
}

/// [`compact_rows_to_batch`], where `shared` (when given) is `ext` as an Arrow buffer: a text
/// column whose every text cell is external (an ingest chunk's `raw` records) is then a
/// `Utf8View` column of views into it, its text not copied (the lake writer writes it to the
/// file's `Utf8` column as the same bytes).
pub fn compact_rows_to_batch_in(
    table: Table,
    rows: &[CompactRow],
    ext: &str,
    shared: Option<&Buffer>,
) -> Result<RecordBatch, LakeError> {
    use arrow::array::{BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
    enum B<'a> {
        Str(StringBuilder),
        View(Vec<u128>, NullBufferBuilder),
        I64(Int64Builder),
        I32(Int32Builder),
        Ts(TimestampMicrosecondBuilder),
        Bool(BooleanBuilder),
        /// A list column: its item field, nulls, offsets, and the items (rows' structs).
        List(Arc<Field>, NullBufferBuilder, Vec<i32>, Vec<Item<'a>>),
    }
    let schema = table.schema();
    let n = rows.len();
    let fallback = || rows_to_batch(table, &rows.iter().map(|r| r.to_values_in(ext)).collect::<Vec<_>>());
    let shared = shared.filter(|b| b.as_ptr() == ext.as_ptr() && b.len() == ext.len());
    // Each column's bytes of text and whether any of it is the row's own, in one pass over the
    // rows (which also checks that every row has a cell for every column).
    let mut bytes = vec![0usize; schema.fields().len()];
    let mut own = vec![false; schema.fields().len()];
    for r in rows {
        if r.cells.len() != bytes.len() {
            return fallback();
        }
        for ((b, o), c) in bytes.iter_mut().zip(own.iter_mut()).zip(&r.cells) {
            match *c {
                Cell::Str(s, e) => {
                    *b += (e - s) as usize;
                    *o = true;
                }
                Cell::Ext(s, e) => *b += (e - s) as usize,
                _ => {}
            }
        }
    }
    let mut builders = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        builders.push(match f.data_type() {
            DataType::Utf8 if shared.is_some() && !own[i] && bytes[i] > 0 => {
                B::View(Vec::with_capacity(n), NullBufferBuilder::new(n))
            }
            DataType::Utf8 => B::Str(StringBuilder::with_capacity(n, bytes[i])),
            DataType::Int64 => B::I64(Int64Builder::with_capacity(n)),
            DataType::Int32 => B::I32(Int32Builder::with_capacity(n)),
            ty @ DataType::Timestamp(TimeUnit::Microsecond, _) => {
                B::Ts(TimestampMicrosecondBuilder::with_capacity(n).with_data_type(ty.clone()))
            }
            DataType::Boolean => B::Bool(BooleanBuilder::with_capacity(n)),
            DataType::List(item) => B::List(item.clone(), NullBufferBuilder::new(n), vec![0], Vec::new()),
            _ => return fallback(),
        });
    }
    let int = |_: &CompactRow, c: Cell| match c {
        Cell::Int(v) => Some(v),
        _ => None,
    };
    // Column by column over blocks of rows small enough to stay in cache: each column's appends
    // are one predictable loop, where cell by cell every row branches through every column type.
    for block in rows.chunks(COLUMN_BLOCK) {
        for (i, b) in builders.iter_mut().enumerate() {
            let plain = match b {
                B::Str(b) => fill(
                    block,
                    i,
                    |r, c| match c {
                        Cell::Str(s, e) => Some(&r.text[s as usize..e as usize]),
                        Cell::Ext(s, e) => Some(external(ext, s, e)),
                        _ => None,
                    },
                    |v| b.append_option(v),
                ),
                B::View(views, nulls) => fill(
                    block,
                    i,
                    |_, c| match c {
                        Cell::Ext(s, e) => Some((external(ext, s, e), s)),
                        _ => None,
                    },
                    |v| match v {
                        Some((text, at)) => {
                            views.push(make_view(text.as_bytes(), 0, at));
                            nulls.append_non_null();
                        }
                        None => {
                            views.push(0);
                            nulls.append_null();
                        }
                    },
                ),
                B::I64(b) => fill(block, i, int, |v| b.append_option(v)),
                B::I32(b) => {
                    fill(block, i, |r, c| int(r, c).and_then(|v| i32::try_from(v).ok()), |v| b.append_option(v))
                }
                B::Ts(b) => fill(block, i, int, |v| b.append_option(v)),
                B::Bool(b) => fill(
                    block,
                    i,
                    |_, c| match c {
                        Cell::Bool(v) => Some(v),
                        _ => None,
                    },
                    |v| b.append_option(v),
                ),
                B::List(_, nulls, offsets, items) => fill(
                    block,
                    i,
                    |r, c| match c {
                        Cell::EmptyList => Some(None),
                        Cell::List(k) => Some(Some((r, &r.lists[k as usize]))),
                        _ => None,
                    },
                    |v| {
                        match v {
                            Some(list) => {
                                if let Some((r, list)) = list {
                                    items.extend(list.iter().map(|item| (r, item.as_slice())));
                                }
                                nulls.append_non_null();
                            }
                            None => nulls.append_null(),
                        }
                        offsets.push(items.len() as i32);
                    },
                ),
            };
            if !plain {
                return fallback();
            }
        }
    }
    let schema = views_schema(&schema, |i| matches!(builders[i], B::View(..)));
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(builders.len());
    for b in builders {
        cols.push(match b {
            B::List(item, mut nulls, offsets, items) => match list_array(item, nulls.finish(), offsets, &items) {
                Some(a) => a,
                None => return fallback(),
            },
            b => {
                match b {
                    B::View(views, mut nulls) => {
                        let buf = shared.expect("views are built only with the shared text").clone();
                        // SAFETY: every view was made from `external(ext, s, e)`, a `str` (UTF-8 on
                        // char boundaries) at byte `s` of `ext`, whose bytes are `buf`'s (checked
                        // above: the same pointer and length): in bounds of buffer 0, valid UTF-8.
                        Arc::new(unsafe { StringViewArray::new_unchecked(views.into(), vec![buf], nulls.finish()) })
                    }
                    B::Str(mut b) => Arc::new(b.finish()),
                    B::I64(mut b) => Arc::new(b.finish()),
                    B::I32(mut b) => Arc::new(b.finish()),
                    B::Ts(mut b) => Arc::new(b.finish()),
                    B::Bool(mut b) => Arc::new(b.finish()),
                    B::List(..) => unreachable!("built above"),
                }
            }
        });
    }
    RecordBatch::try_new(schema, cols).map_err(|e| LakeError::Write { table: table.name(), msg: e.to_string() })
}

/// An item of a list of structs: its row (whose text its cells are ranges of) and its fields' cells.
type Item<'a> = (&'a CompactRow, &'a [Cell]);

/// A list column of `items` (offsets into them, one more than the rows), as its `item` field says;
/// None when a cell is not of its field's type (text, or a list of structs).
fn list_array(
    item: Arc<Field>,
    nulls: Option<arrow::buffer::NullBuffer>,
    offsets: Vec<i32>,
    items: &[Item<'_>],
) -> Option<ArrayRef> {
    let child = if items.is_empty() {
        arrow::array::new_empty_array(item.data_type())
    } else {
        let DataType::Struct(fields) = item.data_type() else { return None };
        struct_array(fields, items)?
    };
    let offsets = arrow::buffer::OffsetBuffer::new(offsets.into());
    Some(Arc::new(arrow::array::ListArray::try_new(item, offsets, child, nulls).ok()?))
}

/// The structs of `items` (every one valid), field by field: text, or a nested list of structs.
fn struct_array(fields: &arrow::datatypes::Fields, items: &[Item<'_>]) -> Option<ArrayRef> {
    use arrow::array::StringBuilder;
    let mut children: Vec<ArrayRef> = Vec::with_capacity(fields.len());
    for (k, f) in fields.iter().enumerate() {
        children.push(match f.data_type() {
            DataType::Utf8 => {
                let mut b = StringBuilder::with_capacity(items.len(), 0);
                for (r, cells) in items {
                    match *cells.get(k)? {
                        Cell::Str(a, e) => b.append_value(&r.text[a as usize..e as usize]),
                        Cell::Null => b.append_null(),
                        _ => return None,
                    }
                }
                Arc::new(b.finish())
            }
            DataType::List(inner) => {
                let (mut nulls, mut offsets, mut sub) = (NullBufferBuilder::new(items.len()), vec![0], Vec::new());
                for &(r, cells) in items {
                    match *cells.get(k)? {
                        Cell::List(n) => {
                            sub.extend(r.lists[n as usize].iter().map(|item| (r, item.as_slice())));
                            nulls.append_non_null();
                        }
                        Cell::EmptyList => nulls.append_non_null(),
                        Cell::Null => nulls.append_null(),
                        _ => return None,
                    }
                    offsets.push(sub.len() as i32);
                }
                list_array(inner.clone(), nulls.finish(), offsets, &sub)?
            }
            _ => return None,
        });
    }
    if items.iter().any(|(_, cells)| cells.len() != fields.len()) {
        return None;
    }
    Some(Arc::new(arrow::array::StructArray::try_new(fields.clone(), children, None).ok()?))
}

/// `schema` with the columns `view` picks as `Utf8View` (the same text as their `Utf8`): the
/// schema of batches whose text columns are views into shared text ([`compact_rows_to_batch_in`],
/// the lake writer's `raw`); `schema` itself when it picks none.
pub(crate) fn views_schema(schema: &SchemaRef, view: impl Fn(usize) -> bool) -> SchemaRef {
    if !(0..schema.fields().len()).any(&view) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| if view(i) { f.as_ref().clone().with_data_type(DataType::Utf8View) } else { f.as_ref().clone() })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Appends column `i` of `block` through `append`: a null cell as `None`, any other as what `value`
/// makes of it; false (and stops) at a cell `value` refuses, one not of the column's type.
fn fill<'a, V>(
    block: &'a [CompactRow],
    i: usize,
    value: impl Fn(&'a CompactRow, Cell) -> Option<V>,
    mut append: impl FnMut(Option<V>),
) -> bool {
    block.iter().all(|r| match r.cells[i] {
        Cell::Null => {
            append(None);
            true
        }
        c => value(r, c).map(|v| append(Some(v))).is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;

    /// A compact row's batch is the one its values make, cell by cell, and a cell of another type
    /// than its column's takes the values' path (which coerces or rejects as before).
    #[test]
    fn compact_rows_make_the_batch_their_values_make() {
        let t = Table::Signins;
        let (id, asn, inter) = (t.col("id").unwrap(), t.col("source_asn").unwrap(), t.col("is_interactive").unwrap());
        let mut a = CompactRow::new(t, 0);
        a.set_int(0, 1_700_000_000_000_000);
        a.set_int(1, 1_700_000_000_000_001);
        a.set_str(2, "{\"raw\":1}");
        a.set_int(3, -42);
        a.set_str(id, "id-1");
        a.set_opt_int(asn, Some(8075));
        a.set_opt_bool(inter, Some(false));
        let mut b = CompactRow::new(t, 64);
        b.set_int(0, 1_700_000_000_000_002);
        b.set_int(1, 1_700_000_000_000_003);
        b.set_int(3, 7);
        b.set_str(id, "");
        b.set_str(id, "id-2 é");
        b.set_opt_str(asn, None);
        let rows = vec![a.clone(), b.clone()];
        let values: Vec<Vec<Value>> = rows.iter().map(CompactRow::to_values).collect();
        assert_eq!(values[1][id], Value::String("id-2 é".into()));
        assert_eq!(values[0][asn], Value::from(8075));
        assert!(values[1][asn].is_null());
        let direct = compact_rows_to_batch(t, &rows, "").unwrap();
        assert_eq!(direct, rows_to_batch(t, &values).unwrap());
        assert_eq!(direct.num_rows(), 2);
        // Text in an integer column: the values' path decides (arrow-json parses "7").
        let mut c = b.clone();
        c.set_str(asn, "7");
        let rows = vec![a, c];
        let values: Vec<Vec<Value>> = rows.iter().map(CompactRow::to_values).collect();
        assert_eq!(
            compact_rows_to_batch(t, &rows, "").map_err(|e| e.to_string()),
            rows_to_batch(t, &values).map_err(|e| e.to_string())
        );
        // Int32 columns: in range directly; out of range through the values (as before).
        let g = Table::GraphActivity;
        let code = g.col("response_status_code").unwrap();
        for v in [Some(200), None, Some(i64::from(i32::MAX) + 1)] {
            let mut a = CompactRow::new(g, 0);
            a.set_int(0, 1_700_000_000_000_000);
            a.set_int(1, 1_700_000_000_000_001);
            a.set_int(3, 1);
            a.set_opt_int(code, v);
            let rows = vec![a];
            let values: Vec<Vec<Value>> = rows.iter().map(CompactRow::to_values).collect();
            assert_eq!(
                compact_rows_to_batch(g, &rows, "").map_err(|e| e.to_string()),
                rows_to_batch(g, &values).map_err(|e| e.to_string()),
                "{v:?}"
            );
        }
        // List columns: empty lists and nulls directly (over more than a block of rows); a text
        // cell in one through the values.
        let o = Table::O365Audit;
        let props = o.col("extended_properties").unwrap();
        let rows: Vec<CompactRow> = (0..COLUMN_BLOCK + 5)
            .map(|i| {
                let mut r = CompactRow::new(o, 0);
                r.set_int(0, 1_700_000_000_000_000 + i as i64);
                r.set_int(1, 1);
                r.set_int(3, i as i64);
                if i % 3 != 0 {
                    r.set_empty_list(props);
                }
                r
            })
            .collect();
        let values: Vec<Vec<Value>> = rows.iter().map(CompactRow::to_values).collect();
        assert_eq!(values[1][props], Value::Array(Vec::new()));
        let direct = compact_rows_to_batch(o, &rows, "").unwrap();
        assert_eq!(direct, rows_to_batch(o, &values).unwrap());
        let lists = direct.column(props).as_list::<i32>();
        use arrow::array::Array;
        assert_eq!((lists.null_count(), lists.value_length(1), lists.values().len()), (45, 0, 0));
        let mut odd = rows.clone();
        odd[2].set_str(props, "[]");
        let values: Vec<Vec<Value>> = odd.iter().map(CompactRow::to_values).collect();
        assert_eq!(
            compact_rows_to_batch(o, &odd, "").map_err(|e| e.to_string()),
            rows_to_batch(o, &values).map_err(|e| e.to_string())
        );
    }

    /// With the external text shared as a buffer, a column whose text is all external becomes
    /// views into that buffer, the same text as the copies; one cell of the row's own text, or a
    /// buffer that is not the text, keeps the copies.
    #[test]
    fn external_text_shared_as_a_buffer_becomes_views_of_the_same_text() {
        let t = Table::Signins;
        let id = t.col("id").unwrap();
        let ext = "{\"record\":0}{\"record\":1}";
        let rows: Vec<CompactRow> = (0..2 * COLUMN_BLOCK + 3)
            .map(|i| {
                let mut r = CompactRow::new(t, 16);
                r.set_int(0, 1_700_000_000_000_000 + i as i64);
                r.set_int(1, 1);
                if i % 7 != 3 {
                    assert!(r.set_ext(2, (i % 2) * 12, (i % 2) * 12 + 12));
                }
                r.set_int(3, i as i64);
                r.set_str(id, &format!("id-{i}"));
                r
            })
            .collect();
        let buf = Buffer::from(ext.as_bytes());
        let ext = std::str::from_utf8(buf.as_slice()).unwrap();
        let copies = compact_rows_to_batch(t, &rows, ext).unwrap();
        let views = compact_rows_to_batch_in(t, &rows, ext, Some(&buf)).unwrap();
        assert_eq!(*views.column(2).data_type(), DataType::Utf8View);
        assert_eq!(views.column(2).null_count(), copies.column(2).null_count());
        assert!(views.column(2).null_count() > 0);
        assert_eq!(views.column(2).as_string_view().data_buffers()[0].as_ptr(), buf.as_ptr());
        let cast = arrow::compute::cast(views.column(2), &DataType::Utf8).unwrap();
        assert_eq!(&cast, copies.column(2));
        for c in (0..copies.num_columns()).filter(|&c| c != 2) {
            assert_eq!(views.column(c), copies.column(c), "column {c}");
        }
        let mut own = rows.clone();
        own[COLUMN_BLOCK + 1].set_str(2, "{\"own\":1}");
        let mixed = compact_rows_to_batch_in(t, &own, ext, Some(&buf)).unwrap();
        assert_eq!(mixed, compact_rows_to_batch(t, &own, ext).unwrap());
        let other = Buffer::from(ext.as_bytes());
        assert_eq!(compact_rows_to_batch_in(t, &rows, ext, Some(&other)).unwrap(), copies, "not the text: copies");
    }

    /// Past one block of rows (converted column by column, a block at a time) the batch is the
    /// values' too, and a cell of another type in a later block still sends all of it that way.
    #[test]
    fn compact_rows_over_several_blocks_make_the_values_batch() {
        let t = Table::Signins;
        let (id, asn, ip) = (t.col("id").unwrap(), t.col("source_asn").unwrap(), t.col("source_ip").unwrap());
        let ext = "{\"record\":0}{\"record\":1}";
        let rows: Vec<CompactRow> = (0..3 * COLUMN_BLOCK as i64 + 5)
            .map(|i| {
                let mut r = CompactRow::new(t, 32);
                r.set_int(0, 1_700_000_000_000_000 + i);
                r.set_int(1, 1_700_000_000_000_000 - i);
                assert!(r.set_ext(2, (i as usize % 2) * 12, (i as usize % 2) * 12 + 12));
                r.set_int(3, i);
                r.set_str(id, &format!("id-{i}"));
                r.set_opt_int(asn, (i % 3 != 0).then_some(i));
                r.set_opt_str(ip, (i % 5 != 0).then(|| format!("10.0.0.{}", i % 250)).as_deref());
                r
            })
            .collect();
        let values: Vec<Vec<Value>> = rows.iter().map(|r| r.to_values_in(ext)).collect();
        let direct = compact_rows_to_batch(t, &rows, ext).unwrap();
        assert_eq!(direct, rows_to_batch(t, &values).unwrap());
        assert_eq!(direct.num_rows(), rows.len());
        let mut odd = rows.clone();
        odd[2 * COLUMN_BLOCK + 1].set_str(asn, "not a number");
        let values: Vec<Vec<Value>> = odd.iter().map(|r| r.to_values_in(ext)).collect();
        assert_eq!(
            compact_rows_to_batch(t, &odd, ext).map_err(|e| e.to_string()),
            rows_to_batch(t, &values).map_err(|e| e.to_string())
        );
    }
}
