//! Filters pushed into a lake scan compare the file's string views, not copies of them.
//!
//! A lake scan reads top-level strings as `Utf8View` while the table declares `Utf8`
//! ([`super::views`]). DataFusion adapts each predicate to the file by casting the column back to
//! `Utf8`, and then moves the cast onto the constant where a comparison allows it. A hash join's
//! dynamic filter (`key >= min AND key <= max AND key IN (…)`, pushed into the probe side's scan)
//! is filled only once the build side is done, long after that adaptation: every batch then
//! casts every key of the scan to `Utf8` — a copy of each string (60 M service-principal ids
//! over 30 days of sign-ins, a quarter of a query's CPU) — to compare it with a few constants.
//!
//! [`ViewFilterAdapterFactory`] wraps the scan's expression adapter: after the usual adaptation
//! it wraps each dynamic filter in a [`ViewDynamicFilter`], which evaluates the filter's current
//! expression with the casts of view columns moved onto the constants of comparisons and `IN`
//! lists — recomputed only when the filter changes. The static part of the predicate gets the
//! same rewrite once per file, and also `IS [NOT] NULL` and `[NOT] [I]LIKE 'pattern'` on a cast
//! view (DataFusion moves casts onto constants for comparisons only: a pushed-down
//! `caller_ip IS NOT NULL` copied every address of the column to test it).
//!
//! Results are the same: a view and its `Utf8` copy hold the same bytes, and comparisons, set
//! membership and patterns look only at those bytes (and at nulls, which stay nulls). Everything
//! else keeps its cast (the hash lookup of large build sides, whose hashes must be the join's
//! own; functions such as `lower`, whose result type would change). Pruning sees a dynamic
//! filter's snapshot rewritten the same way as the static predicate, which it handles alike
//! (null counts; a pattern's prefix bounds compared with the view column's statistics) — and only
//! a bare column's `IN (…)` gives the literal guarantees that bloom filters are tested with.

use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, DynamicFilterPhysicalExpr, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal,
};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_expr_common::physical_expr::{snapshot_generation, PhysicalExpr};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The scan's expression adapter, with dynamic filters wrapped in [`ViewDynamicFilter`].
#[derive(Debug)]
pub(crate) struct ViewFilterAdapterFactory {
    inner: Arc<dyn PhysicalExprAdapterFactory>,
}

impl ViewFilterAdapterFactory {
    /// Wraps `inner` (DataFusion's default adapter when the scan has none).
    pub(crate) fn new(inner: Option<Arc<dyn PhysicalExprAdapterFactory>>) -> Self {
        Self { inner: inner.unwrap_or_else(|| Arc::new(DefaultPhysicalExprAdapterFactory)) }
    }
}

impl PhysicalExprAdapterFactory for ViewFilterAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let inner = self.inner.create(logical_file_schema, Arc::clone(&physical_file_schema))?;
        Ok(Arc::new(ViewFilterAdapter { inner, physical_file_schema }))
    }
}

#[derive(Debug)]
struct ViewFilterAdapter {
    inner: Arc<dyn PhysicalExprAdapter>,
    /// The schema adapted expressions are evaluated against (the file's columns).
    physical_file_schema: SchemaRef,
}

impl PhysicalExprAdapter for ViewFilterAdapter {
    /// The usual adaptation; then the static parts compare views ([`compare_views`]: a pushed-down
    /// `caller_ip IS NOT NULL` or `name LIKE 'x%'` no longer copies each string of the column to
    /// test it), and each dynamic filter is wrapped to do the same whenever it changes.
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let schema = self.physical_file_schema.as_ref();
        // One walk: dynamic filters wrapped (not entered), every other node rewritten in place.
        self.inner
            .rewrite(expr)?
            .transform_down(|e| {
                if e.downcast_ref::<ViewDynamicFilter>().is_some() {
                    Ok(Transformed::new(e, false, TreeNodeRecursion::Jump))
                } else if e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some() {
                    let wrapped: Arc<dyn PhysicalExpr> =
                        Arc::new(ViewDynamicFilter::new(e, Arc::clone(&self.physical_file_schema)));
                    Ok(Transformed::new(wrapped, true, TreeNodeRecursion::Jump))
                } else {
                    compare_view(e, schema)
                }
            })
            .data()
    }
}

/// The inner filter's generation, the batch schema and the rewritten expression.
type Rewritten = Option<(u64, SchemaRef, Arc<dyn PhysicalExpr>)>;

/// A dynamic filter evaluated with the casts of view columns moved onto its constants.
pub(crate) struct ViewDynamicFilter {
    inner: Arc<dyn PhysicalExpr>,
    /// The file's schema, which statistics and bloom filters are read with.
    file_schema: SchemaRef,
    current: Mutex<Rewritten>,
}

impl ViewDynamicFilter {
    pub(crate) fn new(inner: Arc<dyn PhysicalExpr>, file_schema: SchemaRef) -> Self {
        Self { inner, file_schema, current: Mutex::new(None) }
    }

    /// The inner filter's expression as it is now, rewritten for `schema`.
    fn current(&self, schema: &SchemaRef) -> Result<Arc<dyn PhysicalExpr>> {
        let generation = snapshot_generation(&self.inner);
        let mut cached = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, s, expr)) = cached.as_ref() {
            if *g == generation && (Arc::ptr_eq(s, schema) || s == schema) {
                return Ok(Arc::clone(expr));
            }
        }
        let now = self.inner.snapshot()?.unwrap_or_else(|| Arc::clone(&self.inner));
        let expr = compare_views(now, schema)?;
        *cached = Some((generation, Arc::clone(schema), Arc::clone(&expr)));
        Ok(expr)
    }
}

impl fmt::Debug for ViewDynamicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewDynamicFilter").field("inner", &self.inner).finish()
    }
}

impl fmt::Display for ViewDynamicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl PartialEq for ViewDynamicFilter {
    fn eq(&self, other: &Self) -> bool {
        self.inner.eq(&other.inner)
    }
}

impl Eq for ViewDynamicFilter {}

impl Hash for ViewDynamicFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl PhysicalExpr for ViewDynamicFilter {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.inner.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.inner.nullable(input_schema)
    }

    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.inner.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        self.current(&batch.schema())?.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let inner = children.into_iter().next().unwrap_or_else(|| Arc::clone(&self.inner));
        Ok(Arc::new(ViewDynamicFilter::new(inner, Arc::clone(&self.file_schema))))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }

    /// The inner filter's snapshot with the casts of view columns moved onto its constants, as
    /// the static predicate has them, and no node of its own. Pruning takes snapshots: its
    /// literal guarantees (what bloom filters are tested with) come only from a bare column
    /// compared with constants — under DataFusion's `CAST(id AS Utf8) IN (…)` a join's key set
    /// never reached the `id` bloom filters; min/max statistics read the view column alike.
    fn snapshot(&self) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        Ok(Some(self.current(&self.file_schema)?))
    }
}

/// `expr` with every `CAST(view AS Utf8) <op> 'constant'` (either side),
/// `CAST(view AS Utf8) [NOT] IN ('constant', …)` and `CAST(view AS Utf8) [NOT] [I]LIKE 'pattern'`
/// comparing the view with `Utf8View` constants, and `CAST(view AS Utf8) IS [NOT] NULL` testing the
/// view. Dynamic filters are left as they are (see [`ViewDynamicFilter`]). Each rewritten node
/// keeps its type (boolean) and its answer on every row, nulls included.
pub(crate) fn compare_views(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_down(|e| {
        // A dynamic filter changes after this rewrite: what it holds now is not what it will hold.
        if e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some() || e.downcast_ref::<ViewDynamicFilter>().is_some() {
            return Ok(Transformed::new(e, false, TreeNodeRecursion::Jump));
        }
        compare_view(e, schema)
    })
    .data()
}

/// One node of [`compare_views`]: rewritten when it is one of the forms named there.
fn compare_view(e: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    if let Some(n) = e.downcast_ref::<IsNullExpr>() {
        if let Some(view) = view_under_cast(n.arg(), schema)? {
            return Ok(Transformed::yes(Arc::new(IsNullExpr::new(view)) as Arc<dyn PhysicalExpr>));
        }
    } else if let Some(n) = e.downcast_ref::<IsNotNullExpr>() {
        if let Some(view) = view_under_cast(n.arg(), schema)? {
            return Ok(Transformed::yes(Arc::new(IsNotNullExpr::new(view)) as Arc<dyn PhysicalExpr>));
        }
    } else if let Some(l) = e.downcast_ref::<LikeExpr>() {
        if let (Some(view), Some(p)) = (view_under_cast(l.expr(), schema)?, view_constant(l.pattern())) {
            let like = LikeExpr::new(l.negated(), l.case_insensitive(), view, p);
            return Ok(Transformed::yes(Arc::new(like) as Arc<dyn PhysicalExpr>));
        }
    } else if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        if is_comparison(b.op()) {
            if let (Some(view), Some(c)) = (view_under_cast(b.left(), schema)?, view_constant(b.right())) {
                return Ok(Transformed::yes(Arc::new(BinaryExpr::new(view, *b.op(), c)) as Arc<dyn PhysicalExpr>));
            }
            if let (Some(c), Some(view)) = (view_constant(b.left()), view_under_cast(b.right(), schema)?) {
                return Ok(Transformed::yes(Arc::new(BinaryExpr::new(c, *b.op(), view)) as Arc<dyn PhysicalExpr>));
            }
        }
    } else if let Some(list) = e.downcast_ref::<InListExpr>() {
        if let Some(view) = view_under_cast(list.expr(), schema)? {
            let values: Option<Vec<ScalarValue>> = list
                .list()
                .iter()
                .map(|c| match c.downcast_ref::<Literal>()?.value() {
                    ScalarValue::Utf8(v) => Some(ScalarValue::Utf8View(v.clone())),
                    _ => None,
                })
                .collect();
            if let Some(values) = values.filter(|v| !v.is_empty()) {
                let array = ScalarValue::iter_to_array(values)?;
                let rewritten = InListExpr::try_new_from_array(view, array, list.negated(), schema)?;
                return Ok(Transformed::yes(Arc::new(rewritten) as Arc<dyn PhysicalExpr>));
            }
        }
    }
    Ok(Transformed::no(e))
}

fn is_comparison(op: &Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

/// The view under `CAST(view AS Utf8)`, when `e` is that.
fn view_under_cast(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let Some(cast) = e.downcast_ref::<CastExpr>() else { return Ok(None) };
    if *cast.cast_type() != DataType::Utf8 || cast.expr().data_type(schema)? != DataType::Utf8View {
        return Ok(None);
    }
    Ok(Some(Arc::clone(cast.expr())))
}

/// A `Utf8` constant as a `Utf8View` one.
fn view_constant(e: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    match e.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(v) => Some(Arc::new(Literal::new(ScalarValue::Utf8View(v.clone())))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{col, lit};

    fn view_field(name: &str) -> Field {
        Field::new(name, DataType::Utf8View, true)
    }

    fn batch() -> RecordBatch {
        let ids: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("sp-00000000-0000-0000-0000-000000000001"),
            None,
            Some("sp-2"),
            Some("sp-00000000-0000-0000-0000-000000000003"),
            Some(""),
        ]));
        RecordBatch::try_new(Arc::new(Schema::new(vec![view_field("id")])), vec![ids]).unwrap()
    }

    fn cast_id(schema: &Schema) -> Arc<dyn PhysicalExpr> {
        Arc::new(CastExpr::new(col("id", schema).unwrap(), DataType::Utf8, None))
    }

    fn eval(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> BooleanArray {
        let out = expr.evaluate(batch).unwrap().into_array(batch.num_rows()).unwrap();
        out.as_any().downcast_ref::<BooleanArray>().unwrap().clone()
    }

    fn casts(expr: &Arc<dyn PhysicalExpr>) -> usize {
        let mut n = 0;
        expr.apply(|e| {
            n += usize::from(e.downcast_ref::<CastExpr>().is_some());
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        n
    }

    /// Every comparison and list, with the constant on either side, against the cast form.
    #[test]
    fn comparisons_and_lists_on_views_equal_the_cast_form() {
        let b = batch();
        let schema = b.schema();
        let constants =
            ["sp-2", "sp-00000000-0000-0000-0000-000000000001", "", "sp-00000000-0000-0000-0000-000000000002"];
        let ops = [
            Operator::Eq,
            Operator::NotEq,
            Operator::Lt,
            Operator::LtEq,
            Operator::Gt,
            Operator::GtEq,
            Operator::IsDistinctFrom,
            Operator::IsNotDistinctFrom,
        ];
        for c in constants {
            for op in ops {
                for constant_left in [false, true] {
                    let (l, r) = if constant_left { (lit(c), cast_id(&schema)) } else { (cast_id(&schema), lit(c)) };
                    let cast_form: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(l, op, r));
                    let views = compare_views(Arc::clone(&cast_form), &schema).unwrap();
                    assert_eq!(casts(&views), 0, "{views}");
                    assert_eq!(eval(&views, &b), eval(&cast_form, &b), "{cast_form}");
                }
            }
        }
        for negated in [false, true] {
            let values: ArrayRef = Arc::new(StringArray::from(vec![Some("sp-2"), Some(""), Some("nope")]));
            let cast_form: Arc<dyn PhysicalExpr> =
                Arc::new(InListExpr::try_new_from_array(cast_id(&schema), values, negated, &schema).unwrap());
            let views = compare_views(Arc::clone(&cast_form), &schema).unwrap();
            assert_eq!(casts(&views), 0, "{views}");
            assert_eq!(eval(&views, &b), eval(&cast_form, &b), "negated {negated}");
        }
        // A list with a null keeps SQL's three-valued answer.
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("sp-2"), None]));
        let cast_form: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new_from_array(cast_id(&schema), values, true, &schema).unwrap());
        let views = compare_views(Arc::clone(&cast_form), &schema).unwrap();
        assert_eq!(eval(&views, &b), eval(&cast_form, &b));
    }

    /// `IS [NOT] NULL` and every kind of `LIKE` on the view answer as on its cast, nulls included.
    #[test]
    fn null_tests_and_likes_on_views_equal_the_cast_form() {
        let b = batch();
        let schema = b.schema();
        let mut forms: Vec<Arc<dyn PhysicalExpr>> =
            vec![Arc::new(IsNullExpr::new(cast_id(&schema))), Arc::new(IsNotNullExpr::new(cast_id(&schema)))];
        for pattern in ["sp-%", "SP-0%", "%0003", "sp-_", "", "%", "sp-2"] {
            for negated in [false, true] {
                for case_insensitive in [false, true] {
                    forms.push(Arc::new(LikeExpr::new(negated, case_insensitive, cast_id(&schema), lit(pattern))));
                }
            }
        }
        for cast_form in forms {
            let views = compare_views(Arc::clone(&cast_form), &schema).unwrap();
            assert_eq!(casts(&views), 0, "{views}");
            assert_eq!(eval(&views, &b), eval(&cast_form, &b), "{cast_form}");
        }
        // Nested under AND / OR / NOT, as pushed-down filters are.
        let nested: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(IsNotNullExpr::new(cast_id(&schema))),
            Operator::Or,
            Arc::new(BinaryExpr::new(
                Arc::new(LikeExpr::new(false, false, cast_id(&schema), lit("sp-0%"))),
                Operator::And,
                Arc::new(IsNullExpr::new(cast_id(&schema))),
            )),
        ));
        let views = compare_views(Arc::clone(&nested), &schema).unwrap();
        assert_eq!(casts(&views), 0, "{views}");
        assert_eq!(eval(&views, &b), eval(&nested, &b));
    }

    /// A dynamic filter is left to its wrapper: what it holds when the scan is adapted is not
    /// what it holds later.
    #[test]
    fn dynamic_filters_are_not_rewritten_in_place() {
        let b = batch();
        let schema = b.schema();
        let dynamic: Arc<dyn PhysicalExpr> = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![cast_id(&schema)],
            Arc::new(BinaryExpr::new(cast_id(&schema), Operator::Eq, lit("sp-2"))),
        ));
        let out = compare_views(Arc::clone(&dynamic), &schema).unwrap();
        assert!(Arc::ptr_eq(&out, &dynamic));
        // The adapter rewrites the static part and wraps the dynamic one.
        let pred: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(Arc::new(IsNotNullExpr::new(cast_id(&schema))), Operator::And, dynamic));
        let adapter = ViewFilterAdapter {
            inner: DefaultPhysicalExprAdapterFactory.create(Arc::clone(&schema), Arc::clone(&schema)).unwrap(),
            physical_file_schema: Arc::clone(&schema),
        };
        let adapted = adapter.rewrite(Arc::clone(&pred)).unwrap();
        let mut wrapped = 0;
        adapted
            .apply(|e| {
                wrapped += usize::from(e.downcast_ref::<ViewDynamicFilter>().is_some());
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(wrapped, 1, "{adapted}");
        assert!(adapted
            .downcast_ref::<BinaryExpr>()
            .unwrap()
            .left()
            .downcast_ref::<IsNotNullExpr>()
            .unwrap()
            .arg()
            .downcast_ref::<CastExpr>()
            .is_none());
        assert_eq!(eval(&adapted, &b), eval(&pred, &b));
    }

    /// What is not a comparison of a view with a constant keeps its cast.
    #[test]
    fn other_casts_stay() {
        let b = batch();
        let schema = b.schema();
        // A cast to another type, and a cast under something that is not a comparison.
        let to_binary: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(CastExpr::new(col("id", &schema).unwrap(), DataType::LargeUtf8, None)),
            Operator::Eq,
            lit(ScalarValue::LargeUtf8(Some("sp-2".into()))),
        ));
        assert_eq!(casts(&compare_views(to_binary, &schema).unwrap()), 1);
        let concat: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(cast_id(&schema), Operator::StringConcat, lit("x")));
        assert_eq!(casts(&compare_views(concat, &schema).unwrap()), 1);
    }

    /// The wrapper follows its dynamic filter as the join updates it, and prunes with the
    /// filter's snapshot comparing views: a bare column, so its key set is a literal guarantee
    /// (what bloom filters are tested with).
    #[test]
    fn the_wrapper_follows_its_filter() {
        let b = batch();
        let schema = b.schema();
        let id = cast_id(&schema);
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![Arc::clone(&id)], lit(true)));
        let wrapped: Arc<dyn PhysicalExpr> =
            Arc::new(ViewDynamicFilter::new(Arc::clone(&dynamic) as Arc<dyn PhysicalExpr>, Arc::clone(&schema)));
        assert_eq!(eval(&wrapped, &b).true_count(), 5);
        let update = |c: &str| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(
                Arc::new(BinaryExpr::new(Arc::clone(&id), Operator::GtEq, lit(c))),
                Operator::And,
                Arc::new(BinaryExpr::new(Arc::clone(&id), Operator::LtEq, lit(c))),
            ))
        };
        dynamic.update(update("sp-2")).unwrap();
        assert_eq!(
            eval(&wrapped, &b),
            BooleanArray::from(vec![Some(false), None, Some(true), Some(false), Some(false)])
        );
        dynamic.update(update("")).unwrap();
        assert_eq!(
            eval(&wrapped, &b),
            BooleanArray::from(vec![Some(false), None, Some(false), Some(false), Some(true)])
        );
        let snapshot = wrapped.snapshot().unwrap().unwrap();
        assert!(snapshot.downcast_ref::<ViewDynamicFilter>().is_none());
        assert_eq!(casts(&snapshot), 0, "{snapshot}");
        assert_eq!(eval(&snapshot, &b), eval(&wrapped, &b));
        // A join's key set (`id IN (…)`, as a hash join writes it) guarantees the literals.
        let keys = Arc::new(datafusion::arrow::array::StringArray::from(vec!["sp-2", ""]));
        let set: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new_from_array(Arc::clone(&id), keys, false, &schema).unwrap());
        dynamic.update(set).unwrap();
        let snapshot = wrapped.snapshot().unwrap().unwrap();
        assert_eq!(eval(&snapshot, &b), eval(&wrapped, &b));
        let guarantees = datafusion::physical_expr::utils::LiteralGuarantee::analyze(&snapshot);
        assert_eq!(guarantees.len(), 1, "{snapshot}");
        assert_eq!(guarantees[0].column.name(), "id");
        assert_eq!(guarantees[0].literals.len(), 2);
        // The evaluated form has none.
        assert_eq!(casts(&wrapped.downcast_ref::<ViewDynamicFilter>().unwrap().current(&schema).unwrap()), 0);
    }
}
