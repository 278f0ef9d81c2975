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
//! `value` and `tiebreak` are strings, `ts` a timestamp or an integer.

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

impl AggregateUDFImpl for LastBy {
    fn name(&self) -> &str {
        "last_by"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [v, t, b]
                if is_string(v)
                    && is_string(b)
                    && (matches!(t, DataType::Timestamp(_, _) | DataType::Null) || t.is_integer()) =>
            {
                Ok(vec![DataType::Utf8, DataType::Int64, DataType::Utf8])
            }
            _ => plan_err!(
                "last_by(value, ts, tiebreak) takes a string, a timestamp or integer and a string; got {arg_types:?}"
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}[value]", args.name), DataType::Utf8, true)),
            Arc::new(Field::new(format!("{}[ts]", args.name), DataType::Int64, true)),
            Arc::new(Field::new(format!("{}[tiebreak]", args.name), DataType::Utf8, true)),
            Arc::new(Field::new(format!("{}[is_set]", args.name), DataType::Boolean, true)),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LastByAccumulator(LastByGroups::default())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(LastByGroups::default()))
    }
}

/// `(ts, tiebreak)` ordered ascending with nulls greatest.
fn cmp_key(a: (Option<i64>, Option<&str>), b: (Option<i64>, Option<&str>)) -> Ordering {
    (a.0.is_none(), a.0).cmp(&(b.0.is_none(), b.0)).then_with(|| (a.1.is_none(), a.1).cmp(&(b.1.is_none(), b.1)))
}

fn opt<T>(valid: bool, v: T) -> Option<T> {
    valid.then_some(v)
}

/// The states of the groups emitted: per group, whether it saw a row, and that row's key and value.
struct Taken {
    is_set: Vec<bool>,
    ts: Vec<Option<i64>>,
    tiebreak: Vec<Option<String>>,
    value: Vec<Option<String>>,
}

/// Each group's best row so far.
#[derive(Debug, Default)]
struct LastByGroups {
    is_set: Vec<bool>,
    ts: Vec<Option<i64>>,
    tiebreak: Vec<Option<String>>,
    value: Vec<Option<String>>,
    /// Per group, its best row in the batch being read (`u32::MAX`: none yet).
    best: Vec<u32>,
    touched: Vec<usize>,
    bytes: usize,
}

impl LastByGroups {
    fn resize(&mut self, n: usize) {
        if self.is_set.len() < n {
            self.is_set.resize(n, false);
            self.ts.resize(n, None);
            self.tiebreak.resize(n, None);
            self.value.resize(n, None);
            self.best.resize(n, u32::MAX);
        }
    }

    /// Folds rows `(value, ts, tiebreak)` into their groups; `keep` says which rows count.
    fn fold(
        &mut self,
        value: &StringArray,
        ts: &Int64Array,
        tiebreak: &StringArray,
        keep: impl Fn(usize) -> bool,
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        if group_indices.len() >= u32::MAX as usize {
            return exec_err!("last_by: a batch of {} rows is too large", group_indices.len());
        }
        self.resize(total_num_groups);
        let key = |r: usize| (opt(ts.is_valid(r), ts.value(r)), opt(tiebreak.is_valid(r), tiebreak.value(r)));
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
        let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let mut touched = std::mem::take(&mut self.touched);
        for &g in &touched {
            let r = self.best[g] as usize;
            self.best[g] = u32::MAX;
            let (t, b) = key(r);
            if self.is_set[g] && cmp_key((t, b), (self.ts[g], self.tiebreak[g].as_deref())) != Ordering::Greater {
                continue;
            }
            let freed = len(&self.tiebreak[g]) + len(&self.value[g]);
            self.is_set[g] = true;
            self.ts[g] = t;
            self.tiebreak[g] = b.map(str::to_string);
            self.value[g] = opt(value.is_valid(r), value.value(r)).map(str::to_string);
            self.bytes = (self.bytes + len(&self.tiebreak[g]) + len(&self.value[g])).saturating_sub(freed);
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
        fn rest<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
            let tail = v.split_off(n);
            std::mem::replace(v, tail)
        }
        let out = Taken {
            is_set: rest(&mut self.is_set, n),
            ts: rest(&mut self.ts, n),
            tiebreak: rest(&mut self.tiebreak, n),
            value: rest(&mut self.value, n),
        };
        self.best.truncate(self.is_set.len());
        self.bytes = self.tiebreak.iter().chain(&self.value).map(|s| s.as_ref().map_or(0, String::len)).sum();
        out
    }
}

fn strings(a: &ArrayRef, what: &str) -> Result<StringArray> {
    match a.data_type() {
        DataType::Utf8 => Ok(a.as_string::<i32>().clone()),
        DataType::Null => Ok(StringArray::new_null(a.len())),
        t => exec_err!("last_by: {what} must be Utf8 after coercion, got {t}"),
    }
}

fn ints(a: &ArrayRef) -> Result<Int64Array> {
    match a.data_type() {
        DataType::Int64 => Ok(a.as_primitive::<arrow::datatypes::Int64Type>().clone()),
        DataType::Null => Ok(Int64Array::new_null(a.len())),
        t => exec_err!("last_by: ts must be Int64 after coercion, got {t}"),
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
        let (v, t, b) = (strings(&values[0], "value")?, ints(&values[1])?, strings(&values[2], "tiebreak")?);
        self.fold(&v, &t, &b, |r| filtered(opt_filter, r), group_indices, total_num_groups)
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        let (v, t, b) = (strings(&values[0], "value")?, ints(&values[1])?, strings(&values[2], "tiebreak")?);
        let set = values[3].as_boolean();
        self.fold(&v, &t, &b, |r| set.is_valid(r) && set.value(r), group_indices, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Arc::new(StringArray::from(self.take(emit_to).value)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let t = self.take(emit_to);
        Ok(vec![
            Arc::new(StringArray::from(t.value)),
            Arc::new(Int64Array::from(t.ts)),
            Arc::new(StringArray::from(t.tiebreak)),
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
            + (self.tiebreak.capacity() + self.value.capacity()) * 24
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
            ScalarValue::Utf8(self.0.value[0].clone()),
            ScalarValue::Int64(self.0.ts[0]),
            ScalarValue::Utf8(self.0.tiebreak[0].clone()),
            ScalarValue::Boolean(Some(self.0.is_set[0])),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.resize(1);
        Ok(ScalarValue::Utf8(self.0.value[0].clone()))
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
            match cmp_key((k.0, k.1.as_deref()), (e.0 .0, e.0 .1.as_deref())) {
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
        let e = ctx.sql("SELECT last_by(g, ts, tb) FROM t").await.unwrap_err().to_string();
        assert!(e.contains("last_by(value, ts, tiebreak)"), "{e}");
    }
}
