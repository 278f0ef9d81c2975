//! `UNION ALL` arms a rule's parameters rule out, dropped from the parsed statement before
//! DataFusion turns it into a plan.
//!
//! Rules choose between formulations by constants of their window: the Key Vault rule reads its
//! history from weeks, from days and hours, or from the events, each a `UNION ALL` arm whose
//! `WHERE` holds a guard on the parameters alone (`CAST($window_start AS BIGINT) -
//! CAST($history_start AS BIGINT) >= 604800000000`). DataFusion drops a false arm in its first
//! optimizer pass, after it has planned and analyzed it: the Key Vault window with its two dead
//! arms cut from the text takes 9% less time (BENCHMARKS.md, fifty-first entry; dropping them from
//! the logical plan saved nothing: the cost is in turning SQL into a plan).
//!
//! An arm goes only when that cannot change the union's rows or its columns' names:
//! - it is not the first arm (the first names the union's columns), and it is joined by `UNION
//!   ALL` (never `UNION`, whose distinct spans every arm);
//! - it is a plain `SELECT`: no `GROUP BY`, `HAVING`, `QUALIFY` or window clause, and a select
//!   list of columns, literals and wildcards only — no aggregate (`SELECT count(*) … WHERE
//!   false` yields a row), no computed value;
//! - its `WHERE` is false (or null) by its parameter-only parts: a conjunct without any column
//!   or subquery, evaluated by DataFusion's own simplifier with the parameters bound, is false —
//!   through `AND` (one false part) and `OR` (every branch false).
//!
//! Anything else is kept, and DataFusion's optimizer drops it as before. A union's column types
//! are then those of the arms kept: an arm dropped can no longer widen them (an `INT` column
//! stays `INT` where a dropped arm's `BIGINT` would have made it `BIGINT`). The rules' arms read
//! the same columns of one rollup through its views, so their types are the same.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, ParamValues, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr as SqlExpr, GroupByExpr, Query, SelectItem, SetExpr, SetOperator, SetQuantifier,
    VisitMut, VisitorMut,
};
use std::ops::ControlFlow;
use std::sync::Arc;

/// Takes out of `statement` the `UNION ALL` arms `params` make empty (see the module); returns
/// how many went.
pub fn drop_dead_arms(state: &SessionState, statement: &mut Statement, params: &ParamValues) -> usize {
    let Statement::Statement(s) = statement else { return 0 };
    let schema = Arc::new(DFSchema::empty());
    let context = SimplifyContext::builder()
        .with_schema(schema.clone())
        .with_config_options(state.config_options().clone())
        .with_query_execution_start_time(state.execution_props().query_execution_start_time)
        .build();
    let mut pruner = Pruner { state, params, schema, simplifier: ExprSimplifier::new(context), dropped: 0 };
    let _ = s.visit(&mut pruner);
    pruner.dropped
}

struct Pruner<'a> {
    state: &'a SessionState,
    params: &'a ParamValues,
    /// The empty schema the parameter-only conjuncts are planned over, and their simplifier.
    schema: DFSchemaRef,
    simplifier: ExprSimplifier,
    dropped: usize,
}

impl VisitorMut for Pruner<'_> {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.prune(&mut query.body);
        ControlFlow::Continue(())
    }
}

impl Pruner<'_> {
    /// A left-deep chain `((A UNION ALL B) UNION ALL C)` loses its dead right arms; its leftmost
    /// arm always stays.
    fn prune(&mut self, body: &mut SetExpr) {
        let SetExpr::SetOperation { op: SetOperator::Union, set_quantifier: SetQuantifier::All, left, right } = body
        else {
            return;
        };
        self.prune(left);
        if self.is_dead(right) {
            let left = std::mem::replace(
                left.as_mut(),
                SetExpr::Values(ast::Values { explicit_row: false, value_keyword: false, rows: vec![] }),
            );
            *body = left;
            self.dropped += 1;
        }
    }

    fn is_dead(&self, arm: &SetExpr) -> bool {
        let SetExpr::Select(s) = arm else { return false };
        let plain_list = s.projection.iter().all(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => plain(e),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
            _ => false,
        });
        let grouped = match &s.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        };
        plain_list
            && !grouped
            && s.having.is_none()
            && s.qualify.is_none()
            && s.named_window.is_empty()
            && s.selection.as_ref().is_some_and(|w| self.is_false(w))
    }

    /// Whether `e` is false or null whatever the columns hold (see the module).
    fn is_false(&self, e: &SqlExpr) -> bool {
        match e {
            SqlExpr::Nested(e) => self.is_false(e),
            SqlExpr::BinaryOp { left, op: BinaryOperator::And, right } => self.is_false(left) || self.is_false(right),
            SqlExpr::BinaryOp { left, op: BinaryOperator::Or, right } => self.is_false(left) && self.is_false(right),
            e if constant(e) => self.evaluates_false(e),
            _ => false,
        }
    }

    /// `e`, which reads no column, planned and simplified by DataFusion with the parameters bound;
    /// anything it cannot plan or fold counts as "not known false".
    fn evaluates_false(&self, e: &SqlExpr) -> bool {
        let sql = ast::ExprWithAlias { expr: e.clone(), alias: None };
        let Ok(expr) = self.state.create_logical_expr_from_sql_expr(sql, &self.schema) else { return false };
        let bound = expr.transform(|x| match &x {
            Expr::Placeholder(p) => {
                let v = self.params.get_placeholders_with_values(&p.id)?;
                Ok(Transformed::yes(Expr::Literal(v.value, v.metadata)))
            }
            _ => Ok(Transformed::no(x)),
        });
        let Ok(bound) = bound else { return false };
        let s = &self.simplifier;
        let Ok(v) = s.coerce(bound.data, &self.schema).and_then(|e| s.simplify(e)) else { return false };
        matches!(v, Expr::Literal(ScalarValue::Boolean(b), _) if b != Some(true))
            || matches!(v, Expr::Literal(ScalarValue::Null, _))
    }
}

/// A column or a literal (possibly parenthesized): a select-list item whose type is
/// the column's or the literal's, never an aggregate.
fn plain(e: &SqlExpr) -> bool {
    match e {
        SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_) | SqlExpr::Value(_) => true,
        SqlExpr::Nested(e) => plain(e),
        _ => false,
    }
}

/// Whether `e` reads no column and no subquery: only literals, parameters and functions of them.
fn constant(e: &SqlExpr) -> bool {
    let mut reads = false;
    let _ = ast::visit_expressions(e, |x| {
        if matches!(
            x,
            SqlExpr::Identifier(_)
                | SqlExpr::CompoundIdentifier(_)
                | SqlExpr::CompoundFieldAccess { .. }
                | SqlExpr::Subquery(_)
                | SqlExpr::Exists { .. }
                | SqlExpr::InSubquery { .. }
                | SqlExpr::Wildcard(_)
                | SqlExpr::QualifiedWildcard(..)
        ) {
            reads = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    !reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    async fn session() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT, b VARCHAR) AS VALUES (1, 'x'), (2, 'y')").await.unwrap();
        ctx.sql("CREATE TABLE u (c INT, d VARCHAR) AS VALUES (3, 'z')").await.unwrap();
        ctx
    }

    /// The statement of `sql` with the arms `$n` rules out dropped, how many went, and its rows
    /// sorted as text — checked equal to DataFusion's own rows with every arm kept.
    async fn run(ctx: &SessionContext, sql: &str, n: i64) -> (String, usize, String) {
        let state = ctx.state();
        let params = ParamValues::from(vec![("n", ScalarValue::Int64(Some(n)))]);
        let mut stmt = state.sql_to_statement(sql, &state.config().options().sql_parser.dialect).unwrap();
        let dropped = drop_dead_arms(&state, &mut stmt, &params);
        let text = stmt.to_string();
        let rows = |plan| async {
            let df = ctx.execute_logical_plan(plan).await.unwrap().with_param_values(params.clone()).unwrap();
            let first = datafusion::prelude::Expr::Column(df.schema().columns()[0].clone());
            let df = df.sort_by(vec![first]).unwrap();
            pretty_format_batches(&df.collect().await.unwrap()).unwrap().to_string()
        };
        let pruned = rows(state.statement_to_plan(stmt).await.unwrap()).await;
        let whole = rows(state.create_logical_plan(sql).await.unwrap()).await;
        assert_eq!(pruned, whole, "{text}");
        (text, dropped, pruned)
    }

    #[tokio::test]
    async fn the_arms_a_parameter_rules_out_go_and_the_rows_stay() {
        let ctx = session().await;
        let sql = "SELECT a, b FROM t WHERE a > 0 AND CAST($n AS BIGINT) * 2 >= 10 \
                   UNION ALL SELECT c, d FROM u WHERE $n < 5 \
                   UNION ALL SELECT a, b FROM t WHERE (a = 1 AND $n % 2 = 1) OR ($n > 100 AND b = 'y')";
        // n = 7: the second arm goes.
        let (text, dropped, rows) = run(&ctx, sql, 7).await;
        assert_eq!(dropped, 1, "{text}");
        assert!(!text.contains("FROM u"), "{text}");
        assert!(rows.contains("| 1 | x |") && rows.contains("| 2 | y |") && !rows.contains('z'), "{rows}");
        // n = 2: the third arm goes (every branch of its OR is false); the first, false too,
        // stays: it names the columns.
        let (text, dropped, rows) = run(&ctx, sql, 2).await;
        assert_eq!(dropped, 1, "{text}");
        assert!(
            text.contains("CAST($n AS BIGINT) * 2 >= 10") && text.contains("FROM u") && !text.contains("OR"),
            "{text}"
        );
        assert!(rows.contains("| 3 | z |") && !rows.contains('x'), "{rows}");
        // n = 3: nothing goes.
        let (_, dropped, rows) = run(&ctx, sql, 3).await;
        assert_eq!(dropped, 0);
        assert!(rows.contains("| 3 | z |") && rows.contains("| 1 | x |"), "{rows}");
        // Inside a CTE and a derived table, as the rules have them.
        let nested =
            "WITH h AS (SELECT * FROM (SELECT a FROM t WHERE $n > 1 UNION ALL SELECT c FROM u WHERE $n < 1) AS s) \
                      SELECT a FROM h";
        let (text, dropped, _) = run(&ctx, nested, 5).await;
        assert_eq!((dropped, text.contains("FROM u")), (1, false), "{text}");
    }

    #[tokio::test]
    async fn nothing_goes_that_could_yield_a_row() {
        let ctx = session().await;
        for sql in [
            // An aggregate yields a row from no row.
            "SELECT a FROM t UNION ALL SELECT count(*) FROM u WHERE $n < 0",
            "SELECT a FROM t UNION ALL SELECT c FROM u WHERE $n < 0 GROUP BY c",
            // A computed column (not a plain one): kept.
            "SELECT a FROM t UNION ALL SELECT c + 1 FROM u WHERE $n < 0",
            // UNION (distinct) and guards that read columns or are not false.
            "SELECT a FROM t UNION SELECT c FROM u WHERE $n < 0",
            "SELECT a FROM t UNION ALL SELECT c FROM u WHERE c < $n",
            "SELECT a FROM t UNION ALL SELECT c FROM u WHERE $n > 0 OR c > 0",
            "SELECT a FROM t UNION ALL SELECT c FROM u WHERE random() < 2",
            "SELECT a FROM t UNION ALL SELECT c FROM u WHERE $n IN (SELECT c FROM u)",
        ] {
            let (text, dropped, _) = run(&ctx, sql, 1).await;
            assert_eq!(dropped, 0, "{text}");
        }
        // A null guard passes no row: it goes.
        let (_, dropped, rows) = run(&ctx, "SELECT a FROM t UNION ALL SELECT c FROM u WHERE $n > NULL", 1).await;
        assert_eq!(dropped, 1);
        assert!(!rows.contains("| 3 |"), "{rows}");
    }

    /// The built-in rules' hourly runs plan none of the arms their window rules out (the history
    /// arms of the Key Vault rule, the rollup arm of risk stacking with no whole hour in its
    /// window, the partial-hour sign-ins of token replay); a window off the hour keeps them.
    #[tokio::test]
    async fn the_rules_hourly_runs_lose_their_dead_arms() {
        use chrono::TimeZone;
        let rules = crate::rules::load_all(None).unwrap();
        let state = SessionContext::new().state();
        let dialect = state.config().options().sql_parser.dialect;
        let at = |h, m| chrono::Utc.with_ymd_and_hms(2026, 11, 19, h, m, 0).unwrap();
        for (id, on_the_hour, off_the_hour) in [
            ("sp_keyvault_read_from_new_source", 2, 2),
            ("sp_risk_event_stacking", 1, 0),
            ("sp_token_replay_from_unseen_address", 1, 0),
        ] {
            let rule = crate::rules::by_id(&rules, id).unwrap();
            for (end, span, want) in [(at(16, 0), 1, on_the_hour), (at(17, 30), 2, off_the_hour)] {
                let w = crate::rules::RunWindow { start: end - chrono::Duration::hours(span), end };
                let params = ParamValues::from(rule.param_values(&w).unwrap());
                let mut stmt = state.sql_to_statement(&rule.sql, &dialect).unwrap();
                assert_eq!(drop_dead_arms(&state, &mut stmt, &params), want, "{id}, window ending {end}");
            }
        }
    }
}
