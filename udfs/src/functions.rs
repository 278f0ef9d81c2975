//! The SQL functions. Each is vectorized over Arrow arrays: constant arguments are parsed once
//! per batch, addresses are compared as `u128`, results are built with Arrow builders, and a call
//! whose arguments are all constants returns a constant.
//!
//! Longer than 500 lines on purpose: eleven small `ScalarUDFImpl`s that share the argument and
//! caching helpers at the top; split per function they would each repeat them.

use crate::db::{AsnCache, AsnDb, GeoCache, GeoDb};
use crate::ip::{parse_u128, to_ipaddr};
use crate::ranges::{parse_cidr, parse_range, private_ranges, RangeError, RangeSet};
use crate::Watchlists;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Shared state compared by identity, so UDF structs can derive `PartialEq, Eq, Hash`.
#[derive(Debug, Clone)]
pub struct Shared<T>(pub Arc<T>);

impl<T> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl<T> Eq for Shared<T> {}
impl<T> Hash for Shared<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8 as usize).hash(state)
    }
}

pub(crate) fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

fn is_string_list(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => is_string(f.data_type()),
        DataType::Null => true,
        _ => false,
    }
}

fn require_strings(name: &str, types: &[DataType], min: usize, max: Option<usize>) -> Result<Vec<DataType>> {
    if types.len() < min || max.is_some_and(|m| types.len() > m) {
        return plan_err!("{name}() takes {} arguments, got {}", arity(min, max), types.len());
    }
    for (i, t) in types.iter().enumerate() {
        if !is_string(t) {
            return plan_err!("{name}(): argument {} must be a string (an IP address or range), got {t}", i + 1);
        }
    }
    Ok(types.to_vec())
}

fn arity(min: usize, max: Option<usize>) -> String {
    match max {
        Some(m) if m == min => format!("{min}"),
        Some(m) => format!("{min} to {m}"),
        None => format!("at least {min}"),
    }
}

/// Calls `f` for each value of a string array of any of the three string types.
pub(crate) fn for_each_str(arr: &dyn Array, mut f: impl FnMut(Option<&str>)) -> Result<()> {
    match arr.data_type() {
        DataType::Utf8 => arr.as_string::<i32>().iter().for_each(f),
        DataType::LargeUtf8 => arr.as_string::<i64>().iter().for_each(f),
        DataType::Utf8View => arr.as_string_view().iter().for_each(f),
        DataType::Null => (0..arr.len()).for_each(|_| f(None)),
        other => return exec_err!("expected a string column, got {other}"),
    }
    Ok(())
}

/// A string scalar's value: `Some(None)` for a null, `None` when it is not a string.
pub(crate) fn scalar_str(v: &ScalarValue) -> Option<Option<&str>> {
    if v.is_null() {
        return Some(None);
    }
    v.try_as_str()
}

fn plan_range_err(func: &str, e: RangeError) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Plan(format!("{func}(): {e}"))
}

/// All-scalar calls return a scalar; otherwise the arguments become arrays of `n` rows.
pub(crate) fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

pub(crate) fn finish(arr: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
    } else {
        Ok(ColumnarValue::Array(arr))
    }
}

/// A function whose only state is its signature (user-defined coercion, immutable): the struct,
/// `new` and `Default`.
macro_rules! plain_udf {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, PartialEq, Eq, Hash)]
        pub struct $name {
            signature: Signature,
        }

        impl $name {
            pub fn new() -> Self {
                Self { signature: Signature::user_defined(Volatility::Immutable) }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}
pub(crate) use plain_udf;

/// Per-row matcher: a set fixed for the batch, or one built per row from column arguments.
enum Matcher {
    Fixed(Option<RangeSet>),
    PerRow(Vec<Option<RangeSet>>),
}

impl Matcher {
    fn get(&self, row: usize) -> Option<&RangeSet> {
        match self {
            Matcher::Fixed(s) => s.as_ref(),
            Matcher::PerRow(v) => v[row].as_ref(),
        }
    }
}

/// Evaluates `ip ∈ set` over the first argument, NULL for NULL/unparsable IPs or a NULL set.
fn eval_membership(ip: &ColumnarValue, matcher: &Matcher, n: usize, scalar: bool) -> Result<ColumnarValue> {
    let n = if scalar { 1 } else { n };
    let arr = ip.to_array(n)?;
    let mut b = BooleanBuilder::with_capacity(n);
    let mut row = 0;
    for_each_str(&arr, |v| {
        match (v.and_then(parse_u128), matcher.get(row)) {
            (Some(x), Some(set)) => b.append_value(set.contains(x)),
            _ => b.append_null(),
        }
        row += 1;
    })?;
    finish(Arc::new(b.finish()), scalar)
}

// ---------------------------------------------------------------------------------------------
// cidr_match(ip, cidr, ...)

plain_udf!(CidrMatch);

/// Parses a list of CIDR arguments into one set (`None` if any is NULL... all NULL gives `None`).
fn cidrs_from_scalars<'a>(func: &str, vals: impl Iterator<Item = Option<&'a str>>) -> Result<Option<RangeSet>> {
    let mut v = Vec::new();
    for s in vals.flatten() {
        v.push(parse_cidr(s).map_err(|e| plan_range_err(func, e))?);
    }
    Ok(Some(RangeSet::new(v)))
}

impl ScalarUDFImpl for CidrMatch {
    fn name(&self) -> &str {
        "cidr_match"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        require_strings("cidr_match", arg_types, 2, None)
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        for s in args.scalar_arguments.iter().skip(1).flatten() {
            if let Some(Some(text)) = scalar_str(s) {
                parse_cidr(text).map_err(|e| plan_range_err("cidr_match", e))?;
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Boolean, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rest = &args.args[1..];
        let matcher = if all_scalar(rest) {
            let vals: Vec<Option<&str>> = rest
                .iter()
                .map(|a| match a {
                    ColumnarValue::Scalar(s) => scalar_str(s).flatten(),
                    ColumnarValue::Array(_) => None,
                })
                .collect();
            Matcher::Fixed(cidrs_from_scalars("cidr_match", vals.into_iter())?)
        } else {
            // CIDRs from columns: parse per row; an unparsable CIDR gives NULL for that row.
            let n = args.number_rows;
            let arrays = ColumnarValue::values_to_arrays(rest)?;
            let mut per_row: Vec<Vec<Option<String>>> = vec![Vec::new(); n];
            for a in &arrays {
                let mut row = 0;
                for_each_str(a, |v| {
                    per_row[row].push(v.map(str::to_string));
                    row += 1;
                })?;
            }
            Matcher::PerRow(
                per_row
                    .into_iter()
                    .map(|vals| {
                        let mut v = Vec::new();
                        for s in vals.iter().flatten() {
                            v.push(parse_cidr(s).ok()?);
                        }
                        Some(RangeSet::new(v))
                    })
                    .collect(),
            )
        };
        eval_membership(&args.args[0], &matcher, args.number_rows, scalar)
    }
}

// ---------------------------------------------------------------------------------------------
// ip_in_range(ip, range) and ip_in_any_range(ip, [ranges]) / ip_in_any_range(ip, r1, r2, ...)

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IpInRange {
    signature: Signature,
    any: bool,
}

impl IpInRange {
    /// `ip_in_range` when `any` is false, `ip_in_any_range` when true.
    pub fn new(any: bool) -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable), any }
    }
}

fn list_strings(v: &ScalarValue) -> Result<Option<Vec<Option<String>>>> {
    let arr = match v {
        ScalarValue::List(a) => a.value(0),
        ScalarValue::LargeList(a) => a.value(0),
        ScalarValue::FixedSizeList(a) => a.value(0),
        ScalarValue::Null => return Ok(None),
        other => match scalar_str(other) {
            Some(s) => return Ok(s.map(|s| vec![Some(s.to_string())])),
            None => return exec_err!("expected a list of IP ranges, got {}", other.data_type()),
        },
    };
    if v.is_null() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(arr.len());
    for_each_str(&arr, |s| out.push(s.map(str::to_string)))?;
    Ok(Some(out))
}

fn ranges_from(func: &str, items: &[Option<String>], plan: bool) -> Result<Option<RangeSet>> {
    let mut v = Vec::with_capacity(items.len());
    for s in items.iter().flatten() {
        match parse_range(s) {
            Ok(r) => v.push(r),
            Err(e) if plan => return Err(plan_range_err(func, e)),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(RangeSet::new(v)))
}

impl ScalarUDFImpl for IpInRange {
    fn name(&self) -> &str {
        if self.any {
            "ip_in_any_range"
        } else {
            "ip_in_range"
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !self.any {
            return require_strings("ip_in_range", arg_types, 2, Some(2));
        }
        if arg_types.len() == 2 && is_string_list(&arg_types[1]) {
            if !is_string(&arg_types[0]) {
                return plan_err!("ip_in_any_range(): argument 1 must be a string, got {}", arg_types[0]);
            }
            return Ok(arg_types.to_vec());
        }
        require_strings("ip_in_any_range", arg_types, 2, None)
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        for s in args.scalar_arguments.iter().skip(1).flatten() {
            if let Some(items) = list_strings(s)? {
                ranges_from(self.name(), &items, true)?;
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Boolean, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rest = &args.args[1..];
        let n = args.number_rows;
        let matcher = if all_scalar(rest) {
            let mut items = Vec::new();
            let mut any_null = false;
            for a in rest {
                if let ColumnarValue::Scalar(s) = a {
                    match list_strings(s)? {
                        Some(v) => items.extend(v),
                        None => any_null = true,
                    }
                }
            }
            if any_null && rest.len() == 1 {
                Matcher::Fixed(None)
            } else {
                Matcher::Fixed(ranges_from(self.name(), &items, true)?)
            }
        } else {
            let arrays = ColumnarValue::values_to_arrays(rest)?;
            let mut per_row = Vec::with_capacity(n);
            for row in 0..n {
                let mut items = Vec::new();
                let mut null = false;
                for a in &arrays {
                    if a.is_null(row) {
                        null = true;
                        continue;
                    }
                    let v = ScalarValue::try_from_array(a, row)?;
                    if let Some(list) = list_strings(&v)? {
                        items.extend(list);
                    }
                }
                per_row.push(if null && arrays.len() == 1 { None } else { ranges_from(self.name(), &items, false)? });
            }
            Matcher::PerRow(per_row)
        };
        eval_membership(&args.args[0], &matcher, n, scalar)
    }
}

// ---------------------------------------------------------------------------------------------
// ip_compare(a, b)

plain_udf!(IpCompare);

impl ScalarUDFImpl for IpCompare {
    fn name(&self) -> &str {
        "ip_compare"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        require_strings("ip_compare", arg_types, 2, Some(2))
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let a = args.args[0].to_array(n)?;
        let b = args.args[1].to_array(n)?;
        let mut left = Vec::with_capacity(n);
        for_each_str(&a, |v| left.push(v.and_then(parse_u128)))?;
        let mut out = Int32Builder::with_capacity(n);
        let mut row = 0;
        for_each_str(&b, |v| {
            match (left[row], v.and_then(parse_u128)) {
                (Some(x), Some(y)) => out.append_value(x.cmp(&y) as i32),
                _ => out.append_null(),
            }
            row += 1;
        })?;
        finish(Arc::new(out.finish()), scalar)
    }
}

// ---------------------------------------------------------------------------------------------
// is_private_ip(ip), to_ip(s)

plain_udf!(IsPrivateIp);

impl ScalarUDFImpl for IsPrivateIp {
    fn name(&self) -> &str {
        "is_private_ip"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        require_strings("is_private_ip", arg_types, 1, Some(1))
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let set = private_ranges().clone();
        eval_membership(&args.args[0], &Matcher::Fixed(Some(set)), args.number_rows, scalar)
    }
}

plain_udf!(ToIp);

impl ScalarUDFImpl for ToIp {
    fn name(&self) -> &str {
        "to_ip"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        require_strings("to_ip", arg_types, 1, Some(1))
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let arr = args.args[0].to_array(n)?;
        let mut b = StringBuilder::with_capacity(n, n * 12);
        for_each_str(&arr, |v| match v.and_then(crate::ip::parse_ip) {
            Some(ip) => b.append_value(ip.to_string()),
            None => b.append_null(),
        })?;
        finish(Arc::new(b.finish()), scalar)
    }
}

// ---------------------------------------------------------------------------------------------
// in_watchlist(ip, name)

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct InWatchlist {
    signature: Signature,
    lists: Shared<Watchlists>,
}

impl InWatchlist {
    pub fn new(lists: Arc<Watchlists>) -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable), lists: Shared(lists) }
    }

    fn find(&self, name: &str) -> Result<&RangeSet> {
        match self.lists.0.get(name) {
            Some(s) => Ok(s),
            None => {
                let mut known: Vec<&str> = self.lists.0.keys().map(String::as_str).collect();
                known.sort_unstable();
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                plan_err!(
                    "in_watchlist(): no watchlist named '{name}' (loaded: {known}); add one with --watchlist {name}=FILE.csv or put {name}.csv under <lake>/_watchlists/"
                )
            }
        }
    }
}

impl ScalarUDFImpl for InWatchlist {
    fn name(&self) -> &str {
        "in_watchlist"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        require_strings("in_watchlist", arg_types, 2, Some(2))
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        match args.scalar_arguments.get(1) {
            Some(Some(s)) => {
                if let Some(Some(name)) = scalar_str(s) {
                    self.find(name)?;
                }
            }
            _ => return plan_err!("in_watchlist(): the watchlist name must be a constant string"),
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Boolean, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let ColumnarValue::Scalar(name) = &args.args[1] else {
            return exec_err!("in_watchlist(): the watchlist name must be a constant string");
        };
        let set = match scalar_str(name).flatten() {
            Some(n) => Some(self.find(n)?.clone()),
            None => None,
        };
        eval_membership(&args.args[0], &Matcher::Fixed(set), args.number_rows, scalar)
    }
}

// ---------------------------------------------------------------------------------------------
// asn(ip), asn_number(ip), asn_org(ip), geo(ip)

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AsnOutput {
    Struct,
    Number,
    Org,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AsnLookup {
    signature: Signature,
    db: Option<Shared<AsnDb>>,
    output: AsnOutput,
}

impl AsnLookup {
    pub fn new(db: Option<Arc<AsnDb>>, output: AsnOutput) -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable), db: db.map(Shared), output }
    }
}

pub fn asn_fields() -> Fields {
    Fields::from(vec![Field::new("number", DataType::Int64, true), Field::new("organization", DataType::Utf8, true)])
}

pub fn geo_fields() -> Fields {
    Fields::from(vec![
        Field::new("country_iso", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("lat", DataType::Float64, true),
        Field::new("lon", DataType::Float64, true),
    ])
}

impl ScalarUDFImpl for AsnLookup {
    fn name(&self) -> &str {
        match self.output {
            AsnOutput::Struct => "asn",
            AsnOutput::Number => "asn_number",
            AsnOutput::Org => "asn_org",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        require_strings(self.name(), arg_types, 1, Some(1))
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.output {
            AsnOutput::Struct => DataType::Struct(asn_fields()),
            AsnOutput::Number => DataType::Int64,
            AsnOutput::Org => DataType::Utf8,
        })
    }
    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        if self.db.is_none() {
            return plan_err!(
                "{}() needs an ASN database: pass --asn-db FILE (.mmdb, or a start_ip,end_ip,asn,organization CSV/TSV)",
                self.name()
            );
        }
        Ok(Arc::new(Field::new(self.name(), self.return_type(&[])?, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(db) = &self.db else {
            return exec_err!("{}() needs an ASN database (--asn-db)", self.name());
        };
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let arr = args.args[0].to_array(n)?;
        let mut cache = AsnCache::new();
        let mut num = Int64Builder::with_capacity(n);
        let mut org = StringBuilder::with_capacity(n, n * 8);
        let mut valid = Vec::with_capacity(n);
        for_each_str(&arr, |v| {
            let hit = v.and_then(parse_u128).and_then(|x| db.0.lookup(to_ipaddr(x), &mut cache));
            match hit {
                Some(info) => {
                    num.append_value(info.number);
                    org.append_option(info.organization.as_deref());
                    valid.push(true);
                }
                None => {
                    num.append_null();
                    org.append_null();
                    valid.push(false);
                }
            }
        })?;
        let out: ArrayRef = match self.output {
            AsnOutput::Number => Arc::new(num.finish()),
            AsnOutput::Org => Arc::new(org.finish()),
            AsnOutput::Struct => Arc::new(StructArray::try_new(
                asn_fields(),
                vec![Arc::new(num.finish()), Arc::new(org.finish())],
                Some(valid.into()),
            )?),
        };
        finish(out, scalar)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GeoLookup {
    signature: Signature,
    db: Option<Shared<GeoDb>>,
}

impl GeoLookup {
    pub fn new(db: Option<Arc<GeoDb>>) -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable), db: db.map(Shared) }
    }
}

impl ScalarUDFImpl for GeoLookup {
    fn name(&self) -> &str {
        "geo"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        require_strings("geo", arg_types, 1, Some(1))
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(geo_fields()))
    }
    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        if self.db.is_none() {
            return plan_err!("geo() needs a City database: pass --geo-db FILE.mmdb");
        }
        Ok(Arc::new(Field::new("geo", DataType::Struct(geo_fields()), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(db) = &self.db else {
            return exec_err!("geo() needs a City database (--geo-db)");
        };
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let arr = args.args[0].to_array(n)?;
        let mut cache = GeoCache::new();
        let (mut iso, mut country, mut city) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
        let (mut lat, mut lon) = (Float64Builder::with_capacity(n), Float64Builder::with_capacity(n));
        let mut valid = Vec::with_capacity(n);
        for_each_str(&arr, |v| {
            let hit = v.and_then(parse_u128).and_then(|x| db.0.lookup(to_ipaddr(x), &mut cache));
            let g = hit.clone().unwrap_or_default();
            iso.append_option(g.country_iso.as_deref());
            country.append_option(g.country.as_deref());
            city.append_option(g.city.as_deref());
            lat.append_option(g.lat);
            lon.append_option(g.lon);
            valid.push(hit.is_some());
        })?;
        let out = StructArray::try_new(
            geo_fields(),
            vec![
                Arc::new(iso.finish()),
                Arc::new(country.finish()),
                Arc::new(city.finish()),
                Arc::new(lat.finish()),
                Arc::new(lon.finish()),
            ],
            Some(valid.into()),
        )?;
        finish(Arc::new(out), scalar)
    }
}

/// Every function, built for one configuration.
pub fn all(asn: Option<Arc<AsnDb>>, geo: Option<Arc<GeoDb>>, lists: Arc<Watchlists>) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(CidrMatch::new()),
        ScalarUDF::new_from_impl(IpInRange::new(false)),
        ScalarUDF::new_from_impl(IpInRange::new(true)),
        ScalarUDF::new_from_impl(IpCompare::new()),
        ScalarUDF::new_from_impl(IsPrivateIp::new()),
        ScalarUDF::new_from_impl(ToIp::new()),
        ScalarUDF::new_from_impl(InWatchlist::new(lists)),
        ScalarUDF::new_from_impl(AsnLookup::new(asn.clone(), AsnOutput::Struct)),
        ScalarUDF::new_from_impl(AsnLookup::new(asn.clone(), AsnOutput::Number)),
        ScalarUDF::new_from_impl(AsnLookup::new(asn, AsnOutput::Org)),
        ScalarUDF::new_from_impl(GeoLookup::new(geo)),
        ScalarUDF::new_from_impl(crate::graph::GraphPathTemplate::new()),
        ScalarUDF::new_from_impl(crate::hash::KeyHash::new()),
        ScalarUDF::new_from_impl(crate::lists::ListField::new()),
        ScalarUDF::new_from_impl(crate::lists::ListWhere::new()),
    ]
}
