//! Aggregate functions.
//!
//! `last_by(value, ts, tiebreak)`: the `value` of the row with the greatest `(ts, tiebreak)`, nulls
//! greatest — the same as `last_value(value ORDER BY ts, tiebreak)` (ascending, nulls last) but
//! vectorized: DataFusion 55's grouped `last_value` looks at every group of the aggregation on every
//! batch (O(groups) per batch, for each of the aggregation's accumulators), which made a credential
//! change's last sign-in 17 s of CPU over 44 M (change, sign-in) pairs on the large profile. Here a
//! batch costs O(rows): each row is compared with the best row of its group in the batch (an `i64`
//! comparison, the strings only on equal times), and only each touched group's best row is copied
//! into the state. Rows equal in `(ts, tiebreak)` keep the first seen, as `last_value` does within
//! a batch; which of them is first across partitions is, for both, the order rows arrive in.
//!
//! `value` and `tiebreak` are each a string, a timestamp or an integer (the value is returned with
//! its type), `ts` a timestamp or an integer.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use std::cmp::Ordering;
use std::sync::Arc;

/// Every aggregate function of this crate.
pub fn all() -> Vec<AggregateUDF> {
    vec![AggregateUDF::new_from_impl(LastBy::new())]
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LastBy {
    signature: Signature,
}

impl LastBy {
    pub fn new() -> Self {
        LastBy { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for LastBy {
    fn default() -> Self {
        Self::new()
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

/// A timestamp or an integer: held as an `i64` (a timestamp's count of its unit).
fn is_int_like(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _)) || t.is_integer()
}

/// The type a value or tiebreak argument is taken as: strings as `Utf8`, timestamps as they are,
/// integers as `Int64`; None for any other type.
fn coerced(t: &DataType) -> Option<DataType> {
    if is_string(t) {
        Some(DataType::Utf8)
    } else if matches!(t, DataType::Timestamp(_, _)) {
        Some(t.clone())
    } else if t.is_integer() {
        Some(DataType::Int64)
    } else {
        None
    }
}

impl AggregateUDFImpl for LastBy {
    fn name(&self) -> &str {
        "last_by"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if let [v, t, b] = arg_types {
            if matches!(t, DataType::Timestamp(_, _) | DataType::Null) || t.is_integer() {
                if let (Some(v), Some(b)) = (coerced(v), coerced(b)) {
                    return Ok(vec![v, DataType::Int64, b]);
                }
            }
        }
        plan_err!(
            "last_by(value, ts, tiebreak) takes a string, timestamp or integer value, a timestamp or integer time \
             and a string, timestamp or integer tiebreak; got {arg_types:?}"
        )
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().and_then(coerced).unwrap_or(DataType::Utf8))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let tiebreak = args.input_fields.get(2).and_then(|f| coerced(f.data_type())).unwrap_or(DataType::Utf8);
        Ok(vec![
            Arc::new(Field::new(format!("{}[value]", args.name), args.return_type().clone(), true)),
            Arc::new(Field::new(format!("{}[ts]", args.name), DataType::Int64, true)),
            Arc::new(Field::new(format!("{}[tiebreak]", args.name), tiebreak, true)),
            Arc::new(Field::new(format!("{}[is_set]", args.name), DataType::Boolean, true)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LastByAccumulator(LastByGroups::for_args(&args)?)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(LastByGroups::for_args(&args)?))
    }
}

/// One cell of a value or tiebreak column: a string or an `i64`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell<'a> {
    S(Option<&'a str>),
    I(Option<i64>),
}

/// Ascending with nulls greatest (a string and an integer never meet: a column has one kind).
fn cmp_cell(a: Cell<'_>, b: Cell<'_>) -> Ordering {
    match (a, b) {
        (Cell::S(x), Cell::S(y)) => (x.is_none(), x).cmp(&(y.is_none(), y)),
        (Cell::I(x), Cell::I(y)) => (x.is_none(), x).cmp(&(y.is_none(), y)),
        _ => Ordering::Equal,
    }
}

/// `(ts, tiebreak)` ordered ascending with nulls greatest.
fn cmp_key(a: (Option<i64>, Cell<'_>), b: (Option<i64>, Cell<'_>)) -> Ordering {
    (a.0.is_none(), a.0).cmp(&(b.0.is_none(), b.0)).then_with(|| cmp_cell(a.1, b.1))
}

fn opt<T>(valid: bool, v: T) -> Option<T> {
    valid.then_some(v)
}

/// A value or tiebreak column of a batch, read as strings or as `i64`s.
enum Column {
    S(StringArray),
    I(Int64Array),
}

impl Column {
    fn read(a: &ArrayRef, strings: bool, what: &str) -> Result<Self> {
        if strings {
            return Ok(Column::S(match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().clone(),
                DataType::Null => StringArray::new_null(a.len()),
                t => return exec_err!("last_by: {what} must be Utf8 after coercion, got {t}"),
            }));
        }
        Ok(Column::I(ints(a, what)?))
    }

    fn get(&self, r: usize) -> Cell<'_> {
        match self {
            Column::S(a) => Cell::S(opt(a.is_valid(r), a.value(r))),
            Column::I(a) => Cell::I(opt(a.is_valid(r), a.value(r))),
        }
    }
}

/// Per group, an owned value or tiebreak.
#[derive(Debug)]
enum Store {
    S(Vec<Option<String>>),
    I(Vec<Option<i64>>),
}

impl Store {
    fn new(strings: bool) -> Self {
        if strings {
            Store::S(Vec::new())
        } else {
            Store::I(Vec::new())
        }
    }

    fn resize(&mut self, n: usize) {
        match self {
            Store::S(v) => v.resize(n, None),
            Store::I(v) => v.resize(n, None),
        }
    }

    fn get(&self, g: usize) -> Cell<'_> {
        match self {
            Store::S(v) => Cell::S(v[g].as_deref()),
            Store::I(v) => Cell::I(v[g]),
        }
    }

    /// Sets group `g`'s cell; returns the string bytes freed and taken.
    fn set(&mut self, g: usize, c: Cell<'_>) -> (usize, usize) {
        match (self, c) {
            (Store::S(v), Cell::S(x)) => {
                let freed = v[g].as_ref().map_or(0, String::len);
                v[g] = x.map(str::to_string);
                (freed, x.map_or(0, str::len))
            }
            (Store::I(v), Cell::I(x)) => {
                v[g] = x;
                (0, 0)
            }
            _ => (0, 0),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Store::S(v) => v.iter().map(|s| s.as_ref().map_or(0, String::len)).sum(),
            Store::I(_) => 0,
        }
    }

    /// The first `n` groups' cells, removed.
    fn take_front(&mut self, n: usize) -> Store {
        match self {
            Store::S(v) => Store::S(rest(v, n)),
            Store::I(v) => Store::I(rest(v, n)),
        }
    }

    /// The cells as an array of `t` (strings as `Utf8`; `i64`s cast to `t`, e.g. a timestamp).
    fn into_array(self, t: &DataType) -> Result<ArrayRef> {
        Ok(match self {
            Store::S(v) => Arc::new(StringArray::from(v)),
            Store::I(v) => {
                let a: ArrayRef = Arc::new(Int64Array::from(v));
                if t == &DataType::Int64 {
                    a
                } else {
                    arrow::compute::cast(&a, t)?
                }
            }
        })
    }

    fn scalar(&self, g: usize, t: &DataType) -> Result<ScalarValue> {
        match self.get(g) {
            Cell::S(x) => Ok(ScalarValue::Utf8(x.map(str::to_string))),
            Cell::I(x) => ScalarValue::Int64(x).cast_to(t),
        }
    }

    fn capacity_bytes(&self) -> usize {
        match self {
            Store::S(v) => v.capacity() * 24,
            Store::I(v) => v.capacity() * 16,
        }
    }
}

/// The first `n` elements of `v`, removed (the rest move to the front).
fn rest<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
    let tail = v.split_off(n);
    std::mem::replace(v, tail)
}

/// The states of the groups emitted: per group, whether it saw a row, and that row's key and value.
struct Taken {
    is_set: Vec<bool>,
    ts: Vec<Option<i64>>,
    tiebreak: Store,
    value: Store,
}

/// Each group's best row so far.
#[derive(Debug)]
struct LastByGroups {
    /// The value's type (returned) and the tiebreak's (as the state holds it).
    value_type: DataType,
    tiebreak_type: DataType,
    is_set: Vec<bool>,
    ts: Vec<Option<i64>>,
    tiebreak: Store,
    value: Store,
    /// Per group, its best row in the batch being read (`u32::MAX`: none yet).
    best: Vec<u32>,
    touched: Vec<usize>,
    bytes: usize,
}

impl LastByGroups {
    fn new(value_type: DataType, tiebreak_type: DataType) -> Self {
        LastByGroups {
            value: Store::new(value_type == DataType::Utf8),
            tiebreak: Store::new(tiebreak_type == DataType::Utf8),
            value_type,
            tiebreak_type,
            is_set: Vec::new(),
            ts: Vec::new(),
            best: Vec::new(),
            touched: Vec::new(),
            bytes: 0,
        }
    }

    fn for_args(args: &AccumulatorArgs) -> Result<Self> {
        let tiebreak = match args.exprs.get(2) {
            Some(e) => e.data_type(args.schema)?,
            None => DataType::Utf8,
        };
        Ok(Self::new(args.return_type().clone(), coerced(&tiebreak).unwrap_or(DataType::Utf8)))
    }

    fn resize(&mut self, n: usize) {
        if self.is_set.len() < n {
            self.is_set.resize(n, false);
            self.ts.resize(n, None);
            self.tiebreak.resize(n);
            self.value.resize(n);
            self.best.resize(n, u32::MAX);
        }
    }

    /// Folds rows `(value, ts, tiebreak)` into their groups; `keep` says which rows count.
    fn fold(
        &mut self,
        value: &Column,
        ts: &Int64Array,
        tiebreak: &Column,
        keep: impl Fn(usize) -> bool,
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        if group_indices.len() >= u32::MAX as usize {
            return exec_err!("last_by: a batch of {} rows is too large", group_indices.len());
        }
        self.resize(total_num_groups);
        let key = |r: usize| (opt(ts.is_valid(r), ts.value(r)), tiebreak.get(r));
        for (r, &g) in group_indices.iter().enumerate() {
            if !keep(r) {
                continue;
            }
            let b = self.best[g];
            if b == u32::MAX {
                self.best[g] = r as u32;
                self.touched.push(g);
            } else if cmp_key(key(r), key(b as usize)) == Ordering::Greater {
                self.best[g] = r as u32;
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &g in &touched {
            let r = self.best[g] as usize;
            self.best[g] = u32::MAX;
            let (t, b) = key(r);
            if self.is_set[g] && cmp_key((t, b), (self.ts[g], self.tiebreak.get(g))) != Ordering::Greater {
                continue;
            }
            self.is_set[g] = true;
            self.ts[g] = t;
            let (f1, a1) = self.tiebreak.set(g, b);
            let (f2, a2) = self.value.set(g, value.get(r));
            self.bytes = (self.bytes + a1 + a2).saturating_sub(f1 + f2);
        }
        // The list's allocation is kept for the next batch.
        touched.clear();
        self.touched = touched;
        Ok(())
    }

    /// The emitted groups' states, removed (the others move to the front, as `EmitTo` expects;
    /// `best` is all unset between batches, so it only shrinks).
    fn take(&mut self, emit_to: EmitTo) -> Taken {
        let n = match emit_to {
            EmitTo::All => self.is_set.len(),
            EmitTo::First(n) => n.min(self.is_set.len()),
        };
        let out = Taken {
            is_set: rest(&mut self.is_set, n),
            ts: rest(&mut self.ts, n),
            tiebreak: self.tiebreak.take_front(n),
            value: self.value.take_front(n),
        };
        self.best.truncate(self.is_set.len());
        // The emitted groups' strings, not the remaining ones: an aggregation that emits its
        // groups a batch at a time (after spilling) would otherwise walk every group per batch.
        self.bytes = self.bytes.saturating_sub(out.tiebreak.bytes() + out.value.bytes());
        out
    }

    fn columns(&self, values: &[ArrayRef]) -> Result<(Column, Int64Array, Column)> {
        Ok((
            Column::read(&values[0], self.value_type == DataType::Utf8, "value")?,
            ints(&values[1], "ts")?,
            Column::read(&values[2], self.tiebreak_type == DataType::Utf8, "tiebreak")?,
        ))
    }
}

/// An integer or timestamp array as `i64`s.
fn ints(a: &ArrayRef, what: &str) -> Result<Int64Array> {
    match a.data_type() {
        DataType::Int64 => Ok(a.as_primitive::<arrow::datatypes::Int64Type>().clone()),
        DataType::Null => Ok(Int64Array::new_null(a.len())),
        t if is_int_like(t) => {
            Ok(arrow::compute::cast(a, &DataType::Int64)?.as_primitive::<arrow::datatypes::Int64Type>().clone())
        }
        t => exec_err!("last_by: {what} must be a timestamp or an integer after coercion, got {t}"),
    }
}

fn filtered(f: Option<&BooleanArray>, r: usize) -> bool {
    f.is_none_or(|f| f.is_valid(r) && f.value(r))
}

impl GroupsAccumulator for LastByGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let (v, t, b) = self.columns(values)?;
        self.fold(&v, &t, &b, |r| filtered(opt_filter, r), group_indices, total_num_groups)
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        let (v, t, b) = self.columns(values)?;
        let set = values[3].as_boolean();
        self.fold(&v, &t, &b, |r| set.is_valid(r) && set.value(r), group_indices, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let t = self.value_type.clone();
        self.take(emit_to).value.into_array(&t)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (vt, bt) = (self.value_type.clone(), self.tiebreak_type.clone());
        let t = self.take(emit_to);
        Ok(vec![
            t.value.into_array(&vt)?,
            Arc::new(Int64Array::from(t.ts)),
            t.tiebreak.into_array(&bt)?,
            Arc::new(BooleanArray::from(t.is_set)),
        ])
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let set: BooleanArray = (0..values[0].len()).map(|r| Some(filtered(opt_filter, r))).collect();
        Ok(vec![values[0].clone(), values[1].clone(), values[2].clone(), Arc::new(set)])
    }

    fn size(&self) -> usize {
        self.is_set.capacity()
            + self.best.capacity() * 4
            + self.ts.capacity() * 16
            + self.tiebreak.capacity_bytes()
            + self.value.capacity_bytes()
            + self.bytes
    }
}

/// The ungrouped form: one group.
#[derive(Debug)]
struct LastByAccumulator(LastByGroups);

impl Accumulator for LastByAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.update_batch(values, &vec![0; values[0].len()], None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.merge_batch(states, &vec![0; states[0].len()], 1)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.resize(1);
        Ok(vec![
            self.0.value.scalar(0, &self.0.value_type)?,
            ScalarValue::Int64(self.0.ts[0]),
            self.0.tiebreak.scalar(0, &self.0.tiebreak_type)?,
            ScalarValue::Boolean(Some(self.0.is_set[0])),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.resize(1);
        self.0.value.scalar(0, &self.0.value_type)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use std::collections::BTreeMap;

    /// `last_by` picks what `last_value(… ORDER BY ts, tiebreak)` picks: a row of the greatest
    /// `(ts, tiebreak)` of its group, nulls greatest — with nulls in every column, ties of time
    /// broken by the second key, and groups spread over batches of 7 rows in 3 partitions (so
    /// through the partial and the final aggregation).
    #[tokio::test]
    async fn picks_the_row_last_value_ordered_picks() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(7).with_target_partitions(3));
        ctx.register_udaf(AggregateUDF::new_from_impl(LastBy::new()));
        type Key = (Option<i64>, Option<String>);
        type Row = (i64, Option<i64>, Option<String>, Option<String>);
        let mut rows: Vec<Row> = Vec::new();
        let mut x: u64 = 42;
        for i in 0..3000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let g = ((x >> 33) % 37) as i64;
            let ts = (!(x >> 20).is_multiple_of(23)).then_some(((x >> 40) % 40) as i64);
            let tb = (!(x >> 12).is_multiple_of(11)).then(|| format!("10.0.0.{}", (x >> 8) % 4));
            let v = (!(x >> 4).is_multiple_of(13)).then(|| format!("v{i}"));
            rows.push((g, ts, tb, v));
        }
        // What each group may give: the values of the rows with its greatest key.
        let mut best: BTreeMap<i64, (Key, Vec<Option<String>>)> = BTreeMap::new();
        for (g, ts, tb, v) in &rows {
            let k: Key = (*ts, tb.clone());
            let e = best.entry(*g).or_insert_with(|| (k.clone(), Vec::new()));
            match cmp_key((k.0, Cell::S(k.1.as_deref())), (e.0 .0, Cell::S(e.0 .1.as_deref()))) {
                Ordering::Greater => *e = (k, vec![v.clone()]),
                Ordering::Equal => e.1.push(v.clone()),
                Ordering::Less => {}
            }
        }
        let lit = |s: &Option<String>| s.as_ref().map_or("NULL".to_string(), |s| format!("'{s}'"));
        let values: Vec<String> = rows
            .iter()
            .map(|(g, ts, tb, v)| {
                format!("({g}, {}, {}, {})", ts.map_or("NULL".into(), |t| t.to_string()), lit(tb), lit(v))
            })
            .collect();
        ctx.sql(&format!(
            "CREATE TABLE t AS SELECT column1 AS g, arrow_cast(column2, 'Timestamp(Microsecond, Some(\"UTC\"))') AS ts, \
             column3 AS tb, column4 AS v FROM (VALUES {})",
            values.join(", ")
        ))
        .await
        .unwrap();
        let q = "SELECT g, last_by(v, ts, tb), last_value(v ORDER BY ts, tb) FROM t GROUP BY g ORDER BY g";
        let mut groups = 0;
        for b in ctx.sql(q).await.unwrap().collect().await.unwrap() {
            for r in 0..b.num_rows() {
                groups += 1;
                let g = b.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(r);
                let allowed = &best[&g].1;
                for (c, what) in [(1, "last_by"), (2, "last_value")] {
                    let s = b.column(c).as_string::<i32>();
                    let got = (!s.is_null(r)).then(|| s.value(r).to_string());
                    assert!(allowed.contains(&got), "group {g}: {what} gave {got:?}, one of {allowed:?} expected");
                }
            }
        }
        assert_eq!(groups, best.len());
        // Ungrouped: the same pick; over no rows: null.
        let all = &rows.iter().filter(|r| r.0 == 3).collect::<Vec<_>>();
        assert!(!all.is_empty());
        let one = ctx.sql("SELECT last_by(v, ts, tb) FROM t WHERE g = 3").await.unwrap().collect().await.unwrap();
        let s = one[0].column(0).as_string::<i32>();
        assert!(best[&3].1.contains(&(!s.is_null(0)).then(|| s.value(0).to_string())));
        let none = ctx.sql("SELECT last_by(v, ts, tb) FROM t WHERE g < 0").await.unwrap().collect().await.unwrap();
        assert!(none[0].column(0).is_null(0));
        // Wrong argument types are refused at planning, naming the function.
        let e = ctx.sql("SELECT last_by(1.5, ts, tb) FROM t").await.unwrap_err().to_string();
        assert!(e.contains("last_by(value, ts, tiebreak)"), "{e}");
    }

    /// The strings held, as `size` reports them, stay exact when groups are emitted a few at a
    /// time (as after a spill) and rows keep replacing the best ones.
    #[test]
    fn held_bytes_stay_exact_through_partial_emits() {
        let mut acc = LastByGroups::new(DataType::Utf8, DataType::Utf8);
        let held = |a: &LastByGroups| a.tiebreak.bytes() + a.value.bytes();
        let mut groups = 50;
        for round in 0..5i64 {
            let n = 200;
            let values: ArrayRef = Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 7 != 0).then(|| "v".repeat((i * 13 % 29) as usize))),
            ));
            let ts: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n).map(|i| (i * 31 % 17) + round)));
            let tb: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("10.0.{}", i % 5))));
            let gi: Vec<usize> = (0..n as usize).map(|i| i * 7 % groups).collect();
            acc.update_batch(&[values, ts, tb], &gi, None, groups).unwrap();
            assert_eq!(acc.bytes, held(&acc), "round {round}");
            let before = acc.is_set.len();
            let state = acc.state(EmitTo::First(9)).unwrap();
            assert_eq!(state[0].len(), 9);
            assert_eq!(acc.is_set.len(), before - 9);
            assert_eq!(acc.bytes, held(&acc), "round {round}, after emitting");
            groups -= 9;
        }
        acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(acc.bytes, 0);
    }
}
