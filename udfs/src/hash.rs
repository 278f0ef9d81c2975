//! `key_hash(s)`: a 64-bit hash of a string (FNV-1a over its UTF-8 bytes, as a signed BIGINT),
//! the same on every machine and in every version. For indexes that map a long key (a GUID, 36
//! characters) to where it occurs: a lookup by hash finds every place the key is, and at most a
//! few more (another key of the same hash), so an index keyed by it is a superset, never short.

use crate::functions::{all_scalar, finish, for_each_str, is_string, plain_udf};
use arrow::array::Int64Builder;
use arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};
use std::sync::Arc;

/// FNV-1a, 64 bits, of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

plain_udf!(
    /// The SQL function: one string argument (any string type), a BIGINT (NULL for NULL).
    KeyHash
);

impl ScalarUDFImpl for KeyHash {
    fn name(&self) -> &str {
        "key_hash"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] if is_string(t) => Ok(arg_types.to_vec()),
            [t] => plan_err!("key_hash(): its argument must be a string, got {t}"),
            _ => plan_err!("key_hash() takes 1 argument (a string), got {}", arg_types.len()),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let n = if scalar { 1 } else { args.number_rows };
        let arr = args.args[0].to_array(n)?;
        let mut b = Int64Builder::with_capacity(n);
        for_each_str(&arr, |v| b.append_option(v.map(|s| fnv1a64(s.as_bytes()))))?;
        finish(Arc::new(b.finish()), scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::fnv1a64;

    #[test]
    fn fnv1a64_is_the_published_function() {
        // The FNV test vectors (offset basis for the empty string).
        assert_eq!(fnv1a64(b"") as u64, 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a") as u64, 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar") as u64, 0x85944171f73967e8);
    }
}
