//! Payload filters: JSON predicates over event payloads in a MongoDB-like syntax.
//!
//! A [`Filter`] is compiled once (from JSON text, from a [`serde_json::Value`], or from the
//! Rust constructors) and then evaluated against many payloads.
//!
//! Syntax, as accepted by [`Filter::parse`]:
//! - the filter is a JSON object; each key is a field path or a combinator, and several keys
//!   in one object must all hold (implicit AND); `{}` matches every payload;
//! - `{"user.id": 7}` is equality on a dot path; a numeric segment also indexes arrays
//!   (`"items.0.sku"`);
//! - `{"latency_ms": {"$gt": 100, "$lt": 500}}` applies every operator of the object to the
//!   field: `$eq $ne $gt $gte $lt $lte $in $nin $exists`;
//! - an object value without any `$` key is a literal, compared for equality;
//! - `{"$and": [..]}` and `{"$or": [..]}` take non-empty arrays of filter objects,
//!   `{"$not": {..}}` takes one filter object.
//!
//! Semantics:
//! - numbers compare by value (`1 == 1.0`): exactly when both are integers, as `f64`
//!   otherwise; arrays and objects are equal when their elements are, with that number rule;
//! - `$gt $gte $lt $lte` hold only when both sides are numbers or both are strings
//!   (byte-wise lexicographic order); on any other pair they are false;
//! - a missing path fails every operator except `$ne`, `$nin` and `$exists: false`;
//!   `$exists: true` holds for a path that resolves, even to `null`;
//! - a path never reaches into arrays implicitly: `"tags"` equals `"x"` only if the field is
//!   the string `"x"`, not an array that contains it;
//! - [`Filter::matches_bytes`] parses a payload under the rule of [`net_adapter::payload`],
//!   the same rule `RawEvent::from_bytes_validated` enforces; a payload outside the rule
//!   (arbitrary bytes from the raw path, a lone surrogate, nesting deeper than
//!   [`net_adapter::payload::MAX_DEPTH`]) is a value with no fields, so `{}` and
//!   `$exists: false` hold on it and equality does not: every accepted event is matched or
//!   not, deterministically, by every filter.
//!
//! Invariants:
//! - parsing never panics, whatever the input; a parsed filter document nests at most
//!   [`Filter::MAX_DEPTH`] levels and holds at most [`Filter::MAX_NODES`] JSON values, both
//!   checked by one iterative pass before anything is compiled, so the recursive compiler and
//!   evaluator run at most that deep;
//! - paths are split into segments at construction; evaluation allocates nothing per path
//!   segment, and [`Filter::matches`] never panics;
//! - `Filter::not(f)` matches exactly the payloads `f` does not match;
//! - filters built with the Rust constructors skip the size limits: their shape is trusted
//!   code, not input.

use std::cmp::Ordering;
use std::str::FromStr;

use serde_json::{Map, Number, Value};

/// Why a filter could not be parsed or compiled.
///
/// Locations (`at`) name the field path for field operators and the combinator trail for
/// filter objects, e.g. `$and[1].user.name`; `$` is the top-level object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The text is not valid JSON; the message carries serde_json's reason, line and column.
    #[error("invalid filter json: {0}")]
    InvalidJson(String),
    /// A filter (the top level, an element of `$and`/`$or`, or the operand of `$not`) is not
    /// a JSON object.
    #[error("expected a filter object at \"{at}\", found {found}")]
    NotAnObject {
        /// Where the filter object was expected.
        at: String,
        /// The kind of JSON value found instead.
        found: &'static str,
    },
    /// A `$` key that is not an operator or combinator this module knows.
    #[error("unknown operator \"{op}\" at \"{at}\"")]
    UnknownOperator {
        /// The operator as written.
        op: String,
        /// Where it was found.
        at: String,
    },
    /// A known operator used in the wrong place: a field operator where a filter is expected,
    /// or a combinator inside a field's operator object.
    #[error("operator \"{op}\" is not allowed at \"{at}\"")]
    MisplacedOperator {
        /// The operator as written.
        op: String,
        /// Where it was found.
        at: String,
    },
    /// An operator whose operand has the wrong type.
    #[error("operator \"{op}\" at \"{at}\" expects {expected}")]
    InvalidOperand {
        /// The operator as written.
        op: String,
        /// Where it was found.
        at: String,
        /// What the operator accepts.
        expected: &'static str,
    },
    /// An operator object that also holds a plain key, such as `{"$gt": 1, "x": 2}`.
    #[error("object at \"{at}\" mixes operators with the plain key \"{key}\"")]
    MixedOperatorObject {
        /// The first plain key found.
        key: String,
        /// The field whose operator object it is.
        at: String,
    },
    /// A field path with an empty segment (`""`, `"a..b"`, `"a."`).
    #[error("empty segment in field path \"{path}\"")]
    EmptyPathSegment {
        /// The path as written.
        path: String,
    },
    /// The filter document nests deeper than [`Filter::MAX_DEPTH`] levels.
    #[error("filter nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The filter document holds more than [`Filter::MAX_NODES`] JSON values.
    #[error("filter has more than {max} nodes")]
    TooManyNodes {
        /// The limit.
        max: usize,
    },
}

/// A compiled predicate over a JSON event payload.
///
/// Build one with [`Filter::parse`] (MongoDB-like JSON, see the module docs), with
/// [`Filter::from_value`], or with the constructors ([`Filter::eq`], [`Filter::and`], ...),
/// then test payloads with [`Filter::matches`] or [`Filter::matches_bytes`].
///
/// ```
/// use net_core::Filter;
///
/// let f = Filter::parse(r#"{"$and":[{"type":"click"},{"latency_ms":{"$gt":100}}]}"#)?;
/// assert!(f.matches(&serde_json::json!({"type": "click", "latency_ms": 250})));
/// assert!(!f.matches_bytes(br#"{"type":"click","latency_ms":80}"#));
///
/// let built = Filter::and(vec![Filter::eq("type", "click"), Filter::gt("latency_ms", 100)]);
/// assert_eq!(built, f);
/// # Ok::<(), net_core::FilterError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

/// One node of the compiled tree.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Every child holds; no children means always true.
    And(Vec<Node>),
    /// Some child holds; no children means always false.
    Or(Vec<Node>),
    /// The child does not hold.
    Not(Box<Node>),
    /// Every operator holds on the value the path resolves to.
    Field { path: Path, ops: Vec<Op> },
}

/// A field operator and its operand.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
}

/// A dot path, split once at construction.
#[derive(Debug, Clone, PartialEq)]
struct Path {
    segments: Box<[Segment]>,
}

/// One segment of a path: an object key, which doubles as an array index when it is a
/// canonical decimal number.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    key: Box<str>,
    index: Option<usize>,
}

impl Filter {
    /// How deeply a parsed filter document may nest; the top-level object is level 1.
    pub const MAX_DEPTH: usize = 32;

    /// How many JSON values (objects, arrays and scalars, operands included) a parsed filter
    /// document may hold.
    pub const MAX_NODES: usize = 1024;

    /// Parses a filter from JSON text.
    ///
    /// # Errors
    ///
    /// [`FilterError`] when the text is not JSON or not a valid filter (see the module docs).
    pub fn parse(json: &str) -> Result<Filter, FilterError> {
        // serde_json's messages are fixed phrases plus a position; lowercase them ("EOF") to
        // match the other messages.
        let value: Value = serde_json::from_str(json)
            .map_err(|e| FilterError::InvalidJson(e.to_string().to_lowercase()))?;
        Filter::from_value(&value)
    }

    /// Compiles a filter from an already parsed JSON document.
    ///
    /// # Errors
    ///
    /// [`FilterError`] when the document is not a valid filter or exceeds the size limits.
    pub fn from_value(value: &Value) -> Result<Filter, FilterError> {
        check_limits(value)?;
        Ok(Filter {
            root: compile_filter(value, "")?,
        })
    }

    /// The field at `path` equals `value` (numbers by value, so `1` equals `1.0`).
    pub fn eq(path: &str, value: impl Into<Value>) -> Filter {
        Filter::field(path, Op::Eq(value.into()))
    }

    /// The field at `path` is missing or differs from `value`.
    pub fn ne(path: &str, value: impl Into<Value>) -> Filter {
        Filter::field(path, Op::Ne(value.into()))
    }

    /// The field is greater than `value`; both must be numbers or both strings.
    pub fn gt(path: &str, value: impl Into<Value>) -> Filter {
        Filter::field(path, Op::Gt(value.into()))
    }

    /// The field is greater than or equal to `value`; both must be numbers or both strings.
    pub fn gte(path: &str, value: impl Into<Value>) -> Filter {
        Filter::field(path, Op::Gte(value.into()))
    }

    /// The field is less than `value`; both must be numbers or both strings.
    pub fn lt(path: &str, value: impl Into<Value>) -> Filter {
        Filter::field(path, Op::Lt(value.into()))
    }

    /// The field is less than or equal to `value`; both must be numbers or both strings.
    pub fn lte(path: &str, value: impl Into<Value>) -> Filter {
        Filter::field(path, Op::Lte(value.into()))
    }

    /// The field equals one of `values`; an empty list never matches.
    pub fn in_(path: &str, values: Vec<Value>) -> Filter {
        Filter::field(path, Op::In(values))
    }

    /// The field is missing or equals none of `values`.
    pub fn nin(path: &str, values: Vec<Value>) -> Filter {
        Filter::field(path, Op::Nin(values))
    }

    /// With `true`, the path resolves (even to `null`); with `false`, it does not.
    pub fn exists(path: &str, exists: bool) -> Filter {
        Filter::field(path, Op::Exists(exists))
    }

    /// Every filter matches; an empty list matches every payload.
    pub fn and(filters: Vec<Filter>) -> Filter {
        Filter {
            root: Node::And(filters.into_iter().map(|f| f.root).collect()),
        }
    }

    /// At least one filter matches; an empty list matches no payload.
    pub fn or(filters: Vec<Filter>) -> Filter {
        Filter {
            root: Node::Or(filters.into_iter().map(|f| f.root).collect()),
        }
    }

    /// Matches exactly the payloads `filter` does not match; `!filter` does the same.
    #[allow(
        clippy::should_implement_trait,
        reason = "named after `$not`; `std::ops::Not` is implemented too"
    )]
    pub fn not(filter: Filter) -> Filter {
        Filter {
            root: Node::Not(Box::new(filter.root)),
        }
    }

    /// Whether `payload` satisfies the filter.
    pub fn matches(&self, payload: &Value) -> bool {
        self.root.eval(payload)
    }

    /// Parses `raw` and tests it.
    ///
    /// A payload that is a JSON document under the rule of [`net_adapter::payload`] (the
    /// rule `RawEvent::from_bytes_validated` enforces) is tested as parsed. Any other payload
    /// (the raw ingest path accepts arbitrary bytes) is tested as a value with no fields:
    /// every path is missing, so `{}`, `$exists: false`, `$ne` and `$nin` hold and every
    /// other operator fails. No accepted event is invisible to every filter.
    pub fn matches_bytes(&self, raw: &[u8]) -> bool {
        match net_adapter::payload::parse(raw) {
            Ok(payload) => self.matches(&payload),
            Err(_) => self.matches(&Value::Null),
        }
    }

    fn field(path: &str, op: Op) -> Filter {
        Filter {
            root: Node::Field {
                path: Path::split(path),
                ops: vec![op],
            },
        }
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Filter, FilterError> {
        Filter::parse(s)
    }
}

impl std::ops::Not for Filter {
    type Output = Filter;

    fn not(self) -> Filter {
        Filter::not(self)
    }
}

impl Node {
    fn eval(&self, payload: &Value) -> bool {
        match self {
            Node::And(children) => children.iter().all(|child| child.eval(payload)),
            Node::Or(children) => children.iter().any(|child| child.eval(payload)),
            Node::Not(child) => !child.eval(payload),
            Node::Field { path, ops } => {
                let field = path.resolve(payload);
                ops.iter().all(|op| op.eval(field))
            }
        }
    }
}

impl Op {
    fn eval(&self, field: Option<&Value>) -> bool {
        let compare = |operand: &Value, accept: fn(Ordering) -> bool| {
            field
                .and_then(|value| compare(value, operand))
                .is_some_and(accept)
        };
        let equals = |operand: &Value| field.is_some_and(|value| json_eq(value, operand));
        match self {
            Op::Eq(operand) => equals(operand),
            Op::Ne(operand) => !equals(operand),
            Op::Gt(operand) => compare(operand, Ordering::is_gt),
            Op::Gte(operand) => compare(operand, Ordering::is_ge),
            Op::Lt(operand) => compare(operand, Ordering::is_lt),
            Op::Lte(operand) => compare(operand, Ordering::is_le),
            Op::In(operands) => operands.iter().any(equals),
            Op::Nin(operands) => !operands.iter().any(equals),
            Op::Exists(wanted) => field.is_some() == *wanted,
        }
    }
}

impl Path {
    /// Splits a dot path; an empty segment stays an empty key (the parser rejects those).
    fn split(path: &str) -> Path {
        let segments = path
            .split('.')
            .map(|key| Segment {
                key: key.into(),
                index: array_index(key),
            })
            .collect();
        Path { segments }
    }

    fn has_empty_segment(&self) -> bool {
        self.segments.iter().any(|segment| segment.key.is_empty())
    }

    /// Walks the payload; `None` when a segment is missing, indexes past the end, or meets a
    /// scalar.
    fn resolve<'v>(&self, payload: &'v Value) -> Option<&'v Value> {
        let mut current = payload;
        for segment in self.segments.iter() {
            current = match current {
                Value::Object(map) => map.get(&*segment.key)?,
                Value::Array(items) => items.get(segment.index?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

/// A segment is an array index only in canonical decimal form (`0`, `17`; not `01` or `+1`).
fn array_index(segment: &str) -> Option<usize> {
    let canonical = !segment.is_empty()
        && segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'));
    if canonical {
        segment.parse().ok()
    } else {
        None
    }
}

/// Numbers as exact integers when they are integers.
fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Ordering for `$gt`-style operators: defined for two numbers or two strings only.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// JSON equality where numbers compare by value at every depth. The recursion follows the
/// shallower of the two values, so a parsed filter bounds it.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

/// Checks depth and size without recursion, before compilation. The explicit stack never
/// holds more than `MAX_NODES` entries because a container's children are counted before
/// they are pushed.
fn check_limits(root: &Value) -> Result<(), FilterError> {
    let mut stack: Vec<(&Value, usize)> = vec![(root, 1)];
    let mut seen: usize = 0;
    while let Some((value, depth)) = stack.pop() {
        seen = seen.saturating_add(1);
        if depth > Filter::MAX_DEPTH {
            return Err(FilterError::TooDeep {
                max: Filter::MAX_DEPTH,
            });
        }
        let children = match value {
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            _ => 0,
        };
        if seen.saturating_add(stack.len()).saturating_add(children) > Filter::MAX_NODES {
            return Err(FilterError::TooManyNodes {
                max: Filter::MAX_NODES,
            });
        }
        let child_depth = depth.saturating_add(1);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, child_depth))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, child_depth))),
            _ => {}
        }
    }
    Ok(())
}

/// The combinators allowed where a filter object is expected.
const COMBINATORS: [&str; 3] = ["$and", "$or", "$not"];

/// The operators allowed inside a field's operator object.
const FIELD_OPERATORS: [&str; 9] = [
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists",
];

/// Renders a location for error messages: the trail, or `$` for the top level.
fn location(trail: &str) -> String {
    if trail.is_empty() {
        "$".to_owned()
    } else {
        trail.to_owned()
    }
}

/// Appends a step to a trail.
fn join(trail: &str, step: &str) -> String {
    if trail.is_empty() {
        step.to_owned()
    } else {
        format!("{trail}.{step}")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compiles a filter object found at `trail`.
fn compile_filter(value: &Value, trail: &str) -> Result<Node, FilterError> {
    let Value::Object(map) = value else {
        return Err(FilterError::NotAnObject {
            at: location(trail),
            found: kind(value),
        });
    };
    let mut nodes = Vec::with_capacity(map.len());
    for (key, operand) in map {
        let node = match key.as_str() {
            "$and" => Node::And(compile_list(key, operand, trail)?),
            "$or" => Node::Or(compile_list(key, operand, trail)?),
            "$not" => Node::Not(Box::new(compile_filter(operand, &join(trail, key))?)),
            op if FIELD_OPERATORS.contains(&op) => {
                return Err(FilterError::MisplacedOperator {
                    op: op.to_owned(),
                    at: location(trail),
                })
            }
            op if op.starts_with('$') => {
                return Err(FilterError::UnknownOperator {
                    op: op.to_owned(),
                    at: location(trail),
                })
            }
            path => compile_field(path, operand, trail)?,
        };
        nodes.push(node);
    }
    if nodes.len() == 1 {
        if let Some(node) = nodes.pop() {
            return Ok(node);
        }
    }
    Ok(Node::And(nodes))
}

/// Compiles the operand of `$and` / `$or`: a non-empty array of filter objects.
fn compile_list(name: &str, operand: &Value, trail: &str) -> Result<Vec<Node>, FilterError> {
    let items = match operand {
        Value::Array(items) if !items.is_empty() => items,
        _ => {
            return Err(FilterError::InvalidOperand {
                op: name.to_owned(),
                at: location(trail),
                expected: "a non-empty array of filter objects",
            })
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| compile_filter(item, &join(trail, &format!("{name}[{i}]"))))
        .collect()
}

/// Compiles `"path": operand`, where the operand is an operator object or a literal.
fn compile_field(raw_path: &str, operand: &Value, trail: &str) -> Result<Node, FilterError> {
    let path = Path::split(raw_path);
    if path.has_empty_segment() {
        return Err(FilterError::EmptyPathSegment {
            path: raw_path.to_owned(),
        });
    }
    let at = join(trail, raw_path);
    let ops = match operand {
        Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => compile_ops(map, &at)?,
        literal => vec![Op::Eq(literal.clone())],
    };
    Ok(Node::Field { path, ops })
}

/// Compiles an operator object such as `{"$gt": 100, "$lt": 500}` for the field at `at`.
fn compile_ops(map: &Map<String, Value>, at: &str) -> Result<Vec<Op>, FilterError> {
    let invalid = |op: &str, expected: &'static str| FilterError::InvalidOperand {
        op: op.to_owned(),
        at: at.to_owned(),
        expected,
    };
    let comparable = |op: &str, operand: &Value| match operand {
        Value::Number(_) | Value::String(_) => Ok(operand.clone()),
        _ => Err(invalid(op, "a number or a string")),
    };
    let list = |op: &str, operand: &Value| match operand {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(invalid(op, "an array")),
    };
    let mut ops = Vec::with_capacity(map.len());
    for (key, operand) in map {
        let op = match key.as_str() {
            "$eq" => Op::Eq(operand.clone()),
            "$ne" => Op::Ne(operand.clone()),
            "$gt" => Op::Gt(comparable(key, operand)?),
            "$gte" => Op::Gte(comparable(key, operand)?),
            "$lt" => Op::Lt(comparable(key, operand)?),
            "$lte" => Op::Lte(comparable(key, operand)?),
            "$in" => Op::In(list(key, operand)?),
            "$nin" => Op::Nin(list(key, operand)?),
            "$exists" => match operand {
                Value::Bool(wanted) => Op::Exists(*wanted),
                _ => return Err(invalid(key, "a boolean")),
            },
            op if COMBINATORS.contains(&op) => {
                return Err(FilterError::MisplacedOperator {
                    op: op.to_owned(),
                    at: at.to_owned(),
                })
            }
            op if op.starts_with('$') => {
                return Err(FilterError::UnknownOperator {
                    op: op.to_owned(),
                    at: at.to_owned(),
                })
            }
            plain => {
                return Err(FilterError::MixedOperatorObject {
                    key: plain.to_owned(),
                    at: at.to_owned(),
                })
            }
        };
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Parses `filter` and `payload`, and asserts the filter's verdict on the payload.
    fn check(filter: &str, payload: &str, expected: bool) {
        let compiled =
            Filter::parse(filter).unwrap_or_else(|e| panic!("filter {filter} was rejected: {e}"));
        let value: Value = serde_json::from_str(payload).expect("test payload is json");
        assert_eq!(
            compiled.matches(&value),
            expected,
            "filter {filter} on payload {payload}"
        );
        assert_eq!(
            compiled.matches_bytes(payload.as_bytes()),
            expected,
            "matches_bytes: filter {filter} on payload {payload}"
        );
    }

    #[test]
    fn evaluation_table() {
        let doc = r#"{"type":"click","n":5,"f":2.5,"s":"m","null":null,"t":true,
            "user":{"id":7,"name":"ada","tags":["a","b"]},
            "items":[{"sku":"x1","qty":2},{"sku":"y2","qty":0}],
            "big":18446744073709551615,"neg":-3,"obj":{"a":1,"b":[1,2]},"0":"zero"}"#;
        let cases: &[(&str, bool)] = &[
            // empty filter and implicit equality
            (r#"{}"#, true),
            (r#"{"type":"click"}"#, true),
            (r#"{"type":"view"}"#, false),
            (r#"{"user.id":7}"#, true),
            (r#"{"user.id":8}"#, false),
            (r#"{"user.id":"7"}"#, false),
            (r#"{"type":"click","user.id":7}"#, true),
            (r#"{"type":"click","user.id":8}"#, false),
            // numbers by value
            (r#"{"n":5.0}"#, true),
            (r#"{"n":{"$eq":5.0}}"#, true),
            (r#"{"f":2.5}"#, true),
            (r#"{"neg":-3.0}"#, true),
            (r#"{"big":18446744073709551615}"#, true),
            (r#"{"big":18446744073709551614}"#, false),
            (r#"{"big":{"$gt":9223372036854775807}}"#, true),
            (r#"{"neg":{"$lt":18446744073709551615}}"#, true),
            // literal objects and arrays, with numbers by value inside
            (r#"{"obj":{"b":[1.0,2],"a":1}}"#, true),
            (r#"{"obj":{"a":1}}"#, false),
            (r#"{"user.tags":["a","b"]}"#, true),
            (r#"{"user.tags":["b","a"]}"#, false),
            (r#"{"user.tags":"a"}"#, false),
            // null and booleans
            (r#"{"null":null}"#, true),
            (r#"{"missing":null}"#, false),
            (r#"{"t":true}"#, true),
            (r#"{"t":1}"#, false),
            // $ne
            (r#"{"n":{"$ne":5}}"#, false),
            (r#"{"n":{"$ne":6}}"#, true),
            (r#"{"n":{"$ne":"5"}}"#, true),
            (r#"{"missing":{"$ne":1}}"#, true),
            // ordering on numbers
            (r#"{"n":{"$gt":4}}"#, true),
            (r#"{"n":{"$gt":5}}"#, false),
            (r#"{"n":{"$gte":5}}"#, true),
            (r#"{"n":{"$gte":5.5}}"#, false),
            (r#"{"n":{"$lt":5.5}}"#, true),
            (r#"{"n":{"$lt":5}}"#, false),
            (r#"{"n":{"$lte":5}}"#, true),
            (r#"{"f":{"$gt":2,"$lt":3}}"#, true),
            (r#"{"f":{"$gt":2,"$lt":2.5}}"#, false),
            // ordering on strings
            (r#"{"s":{"$gt":"a"}}"#, true),
            (r#"{"s":{"$lt":"a"}}"#, false),
            (r#"{"s":{"$gte":"m","$lte":"m"}}"#, true),
            (r#"{"s":{"$lt":"ma"}}"#, true),
            // type mismatches are false
            (r#"{"s":{"$gt":1}}"#, false),
            (r#"{"s":{"$lt":1}}"#, false),
            (r#"{"n":{"$gt":"1"}}"#, false),
            (r#"{"t":{"$gte":0}}"#, false),
            (r#"{"null":{"$lte":0}}"#, false),
            (r#"{"user":{"$gt":0}}"#, false),
            // missing paths
            (r#"{"missing":{"$gt":0}}"#, false),
            (r#"{"missing":{"$lt":0}}"#, false),
            (r#"{"missing":{"$eq":null}}"#, false),
            (r#"{"user.id.deeper":7}"#, false),
            (r#"{"n.0":5}"#, false),
            // $in / $nin
            (r#"{"n":{"$in":[1,5.0]}}"#, true),
            (r#"{"n":{"$in":[1,2]}}"#, false),
            (r#"{"n":{"$in":[]}}"#, false),
            (r#"{"missing":{"$in":[null]}}"#, false),
            (r#"{"n":{"$nin":[1,2]}}"#, true),
            (r#"{"n":{"$nin":[5]}}"#, false),
            (r#"{"n":{"$nin":[]}}"#, true),
            (r#"{"missing":{"$nin":[1]}}"#, true),
            (r#"{"obj":{"$in":[{"a":1,"b":[1,2]}]}}"#, true),
            // $exists
            (r#"{"null":{"$exists":true}}"#, true),
            (r#"{"null":{"$exists":false}}"#, false),
            (r#"{"missing":{"$exists":false}}"#, true),
            (r#"{"missing":{"$exists":true}}"#, false),
            (r#"{"items.1.qty":{"$exists":true}}"#, true),
            (r#"{"items.2":{"$exists":false}}"#, true),
            // array indexing
            (r#"{"items.0.sku":"x1"}"#, true),
            (r#"{"items.1.sku":"y2"}"#, true),
            (r#"{"items.1.qty":{"$lte":0}}"#, true),
            (r#"{"items.2.sku":"x1"}"#, false),
            (r#"{"items.01.sku":"y2"}"#, false),
            (r#"{"items.sku":"x1"}"#, false),
            (r#"{"user.tags.1":"b"}"#, true),
            (r#"{"0":"zero"}"#, true),
            // combinators
            (r#"{"$and":[{"type":"click"},{"n":{"$gt":4}}]}"#, true),
            (r#"{"$and":[{"type":"click"},{"n":{"$gt":5}}]}"#, false),
            (r#"{"$or":[{"type":"view"},{"n":5}]}"#, true),
            (r#"{"$or":[{"type":"view"},{"n":6}]}"#, false),
            (r#"{"$not":{"type":"view"}}"#, true),
            (r#"{"$not":{"type":"click"}}"#, false),
            (r#"{"$not":{}}"#, false),
            (r#"{"$not":{"$not":{"n":5}}}"#, true),
            (r#"{"$not":{"missing":{"$gt":1}}}"#, true),
            (
                r#"{"$or":[{"$and":[{"n":5},{"s":"x"}]},{"user.name":"ada"}],"t":true}"#,
                true,
            ),
            (
                r#"{"$or":[{"$and":[{"n":5},{"s":"x"}]},{"user.name":"bob"}],"t":true}"#,
                false,
            ),
            (r#"{"$and":[{}],"$or":[{"n":5}]}"#, true),
        ];
        for &(filter, expected) in cases {
            check(filter, doc, expected);
        }
    }

    #[test]
    fn payloads_that_are_not_objects() {
        check(r#"{}"#, "[1,2]", true);
        check(r#"{"0":1}"#, "[1,2]", true);
        check(r#"{"a":1}"#, "3", false);
        check(r#"{"a":{"$exists":false}}"#, "null", true);
        check(r#"{"a":{"$ne":1}}"#, "\"text\"", true);
    }

    #[test]
    fn unparsable_payload_is_a_value_without_fields() {
        let depth = net_adapter::payload::MAX_DEPTH;
        let too_deep = format!("{}1{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
        let too_deep_object = format!("{}1{}", "{\"a\":".repeat(depth + 1), "}".repeat(depth + 1));
        let raws: &[&[u8]] = &[
            b"",
            b"{",
            b"\xff\xfe",
            b"{\"a\":\"\xff\xfe\"}",
            br#"{"a":"\ud800"}"#,
            br#"{"a":1,"b":"\udc00"}"#,
            b"{\"a\":1}}",
            b"nul",
            b"not json",
            too_deep.as_bytes(),
            too_deep_object.as_bytes(),
        ];
        // (filter, verdict on a payload with no fields)
        let cases: &[(&str, bool)] = &[
            ("{}", true),
            (r#"{"a":{"$exists":false}}"#, true),
            (r#"{"a":{"$exists":true}}"#, false),
            (r#"{"a":1}"#, false),
            (r#"{"a":{"$ne":1}}"#, true),
            (r#"{"a":{"$nin":[1]}}"#, true),
            (r#"{"a":{"$in":[1]}}"#, false),
            (r#"{"a":{"$gt":0}}"#, false),
            (r#"{"$not":{"a":1}}"#, true),
            (r#"{"$or":[{"a":1},{"b":{"$exists":false}}]}"#, true),
        ];
        for raw in raws {
            for &(filter, expected) in cases {
                let f = Filter::parse(filter).expect("valid");
                assert_eq!(
                    f.matches_bytes(raw),
                    expected,
                    "{filter} on {:?}",
                    String::from_utf8_lossy(&raw[..raw.len().min(40)])
                );
                assert_eq!(
                    Filter::not(f).matches_bytes(raw),
                    !expected,
                    "$not {filter}"
                );
            }
        }
    }

    #[test]
    fn deepest_valid_payload_is_parsed() {
        let depth = net_adapter::payload::MAX_DEPTH;
        let deepest = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        );
        assert!(Filter::parse(r#"{"a":{"$exists":true}}"#)
            .expect("valid")
            .matches_bytes(deepest.as_bytes()));
    }

    #[test]
    fn rejected_filters() {
        let deep_ok = format!("{}{{\"a\":1}}{}", "{\"$not\":".repeat(30), "}".repeat(30));
        assert!(
            Filter::parse(&deep_ok).is_ok(),
            "30 nested $not fit in 32 levels"
        );
        let too_deep = format!("{}{{\"a\":1}}{}", "{\"$not\":".repeat(31), "}".repeat(31));
        let deep_literal = format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        let wide_in = format!("{{\"a\":{{\"$in\":[{}]}}}}", vec!["1"; 1030].join(","));
        let wide_and = format!("{{\"$and\":[{}]}}", vec!["{\"a\":1}"; 600].join(","));
        let cases: &[(&str, &str)] = &[
            ("", "invalid filter json"),
            ("{", "invalid filter json"),
            ("{\"a\":1} x", "invalid filter json"),
            ("[]", "expected a filter object at \"$\", found an array"),
            ("7", "found a number"),
            ("null", "found null"),
            (
                r#"{"user.name":{"$regex":"a"}}"#,
                r#"unknown operator "$regex" at "user.name""#,
            ),
            (r#"{"$nor":[{"a":1}]}"#, r#"unknown operator "$nor" at "$""#),
            (r#"{"$gt":1}"#, r#"operator "$gt" is not allowed at "$""#),
            (
                r#"{"a":{"$and":[{"b":1}]}}"#,
                r#"operator "$and" is not allowed at "a""#,
            ),
            (
                r#"{"a":{"$in":1}}"#,
                r#"operator "$in" at "a" expects an array"#,
            ),
            (
                r#"{"a":{"$nin":{"x":1}}}"#,
                r#"operator "$nin" at "a" expects an array"#,
            ),
            (
                r#"{"a":{"$exists":1}}"#,
                r#"operator "$exists" at "a" expects a boolean"#,
            ),
            (r#"{"a":{"$gt":true}}"#, "expects a number or a string"),
            (r#"{"a":{"$lte":null}}"#, "expects a number or a string"),
            (r#"{"a":{"$lt":[1]}}"#, "expects a number or a string"),
            (
                r#"{"$and":[]}"#,
                r#"operator "$and" at "$" expects a non-empty array"#,
            ),
            (
                r#"{"$or":{}}"#,
                r#"operator "$or" at "$" expects a non-empty array"#,
            ),
            (
                r#"{"$and":{"a":1}}"#,
                "expects a non-empty array of filter objects",
            ),
            (
                r#"{"$and":[{"a":1},2]}"#,
                r#"expected a filter object at "$and[1]", found a number"#,
            ),
            (
                r#"{"$not":[{"a":1}]}"#,
                r#"expected a filter object at "$not", found an array"#,
            ),
            (r#"{"$not":true}"#, r#"at "$not", found a boolean"#),
            (
                r#"{"$or":[{"a":1},{"b":{"$foo":1}}]}"#,
                r#"unknown operator "$foo" at "$or[1].b""#,
            ),
            (
                r#"{"$not":{"$and":[{"x.y":{"$in":"z"}}]}}"#,
                r#"operator "$in" at "$not.$and[0].x.y" expects an array"#,
            ),
            (
                r#"{"a":{"$gt":1,"b":2}}"#,
                r#"mixes operators with the plain key "b""#,
            ),
            (r#"{"":1}"#, r#"empty segment in field path """#),
            (r#"{"a..b":1}"#, r#"empty segment in field path "a..b""#),
            (r#"{"a.":1}"#, "empty segment"),
            (&too_deep, "filter nests deeper than 32 levels"),
            (&deep_literal, "filter nests deeper than 32 levels"),
            (&wide_in, "filter has more than 1024 nodes"),
            (&wide_and, "filter has more than 1024 nodes"),
        ];
        for &(filter, expected) in cases {
            match Filter::parse(filter) {
                Ok(f) => panic!("filter {filter} was accepted as {f:?}"),
                Err(e) => {
                    let message = e.to_string();
                    assert!(
                        message.contains(expected),
                        "filter {filter}: {message:?} does not contain {expected:?}"
                    );
                    assert_eq!(message, message.to_lowercase(), "lowercase: {message}");
                    assert!(!message.ends_with('.'), "no trailing period: {message}");
                }
            }
        }
    }

    #[test]
    fn node_limit_is_exact() {
        // 1 object + 1 operator object + 1 array + n elements
        let within = json!({"a": {"$in": vec![1; Filter::MAX_NODES - 3]}});
        assert!(Filter::from_value(&within).is_ok());
        let over = json!({"a": {"$in": vec![1; Filter::MAX_NODES - 2]}});
        assert_eq!(
            Filter::from_value(&over),
            Err(FilterError::TooManyNodes { max: 1024 })
        );
    }

    #[test]
    fn constructors_equal_parsed_filters() {
        let pairs = [
            (Filter::eq("user.id", 7), r#"{"user.id":7}"#),
            (Filter::eq("o", json!({"a": 1})), r#"{"o":{"a":1}}"#),
            (Filter::ne("a", "x"), r#"{"a":{"$ne":"x"}}"#),
            (Filter::gt("a", 1), r#"{"a":{"$gt":1}}"#),
            (Filter::gte("a", 1.5), r#"{"a":{"$gte":1.5}}"#),
            (Filter::lt("a", "m"), r#"{"a":{"$lt":"m"}}"#),
            (Filter::lte("a", -2), r#"{"a":{"$lte":-2}}"#),
            (
                Filter::in_("a", vec![json!(1), json!("b")]),
                r#"{"a":{"$in":[1,"b"]}}"#,
            ),
            (Filter::nin("a", vec![]), r#"{"a":{"$nin":[]}}"#),
            (
                Filter::exists("items.0", false),
                r#"{"items.0":{"$exists":false}}"#,
            ),
            (
                Filter::and(vec![Filter::eq("a", 1), Filter::eq("b", 2)]),
                r#"{"$and":[{"a":1},{"b":2}]}"#,
            ),
            (
                Filter::and(vec![Filter::eq("a", 1), Filter::eq("b", 2)]),
                r#"{"a":1,"b":2}"#,
            ),
            (
                Filter::or(vec![Filter::eq("a", 1), Filter::not(Filter::eq("b", 2))]),
                r#"{"$or":[{"a":1},{"$not":{"b":2}}]}"#,
            ),
            (Filter::and(vec![]), "{}"),
        ];
        for (built, text) in pairs {
            assert_eq!(built, Filter::parse(text).expect("valid"), "{text}");
            let from_str: Filter = text.parse().expect("valid");
            assert_eq!(built, from_str, "{text}");
        }
    }

    #[test]
    fn constructor_edge_cases() {
        let payload = json!({"a": 1, "": {"b": 2}});
        assert!(Filter::and(vec![]).matches(&payload));
        assert!(!Filter::or(vec![]).matches(&payload));
        assert!(!Filter::gt("a", Value::Null).matches(&payload));
        assert!(Filter::eq(".b", 2).matches(&payload));
        assert!(Filter::eq("a", f64::NAN).matches(&json!({"a": null})));
        // The trait method is still reachable next to the inherent constructor.
        assert!(PartialEq::eq(&Filter::eq("a", 1), &Filter::eq("a", 1)));
        assert!(Filter::eq("a", 1) != Filter::eq("a", 2));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("$and".to_owned()),
            Just("$or".to_owned()),
            Just("$not".to_owned()),
            Just("$eq".to_owned()),
            Just("$gt".to_owned()),
            Just("$in".to_owned()),
            Just("$nin".to_owned()),
            Just("$exists".to_owned()),
            Just("$regex".to_owned()),
            Just("a".to_owned()),
            Just("a.0".to_owned()),
            Just("".to_owned()),
            ".{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// A number whose `f64` form is exact, as an integer or a float value.
    fn arb_number() -> impl Strategy<Value = (f64, Value)> {
        (-20i64..20, any::<bool>(), any::<bool>()).prop_map(|(n, half, as_float)| {
            if half {
                let x = n as f64 + 0.5;
                (x, Value::from(x))
            } else if as_float {
                (n as f64, Value::from(n as f64))
            } else {
                (n as f64, Value::from(n))
            }
        })
    }

    const KEYS: [&str; 4] = ["a", "b", "c", "d"];

    fn arb_flat_payload() -> impl Strategy<Value = Value> {
        let field = prop_oneof![
            6 => arb_number().prop_map(|(_, v)| Some(v)),
            1 => Just(Some(json!("5"))),
            1 => Just(Some(Value::Null)),
            2 => Just(None),
        ];
        prop::collection::vec(field, KEYS.len()).prop_map(|fields| {
            let map = KEYS
                .iter()
                .zip(fields)
                .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v)))
                .collect();
            Value::Object(map)
        })
    }

    fn arb_filter_json() -> impl Strategy<Value = Value> {
        let path = prop::sample::select(vec!["a", "b", "c", "d", "c.x", "d.0", "zz"]);
        let operand = prop_oneof![
            arb_number().prop_map(|(_, v)| v),
            Just(json!("5")),
            Just(json!("q")),
            Just(Value::Null),
            Just(json!({"x": 1})),
            Just(json!([1, 2])),
        ];
        let comparable = prop_oneof![arb_number().prop_map(|(_, v)| v), Just(json!("m"))];
        let list = prop::collection::vec(operand.clone(), 0..3);
        let op = prop_oneof![
            operand.clone().prop_map(|v| json!({ "$eq": v })),
            operand.clone().prop_map(|v| json!({ "$ne": v })),
            operand.prop_map(|v| v),
            comparable.clone().prop_map(|v| json!({ "$gt": v })),
            comparable.clone().prop_map(|v| json!({ "$gte": v })),
            comparable.clone().prop_map(|v| json!({ "$lt": v })),
            comparable.prop_map(|v| json!({ "$lte": v })),
            list.clone().prop_map(|v| json!({ "$in": v })),
            list.prop_map(|v| json!({ "$nin": v })),
            any::<bool>().prop_map(|b| json!({ "$exists": b })),
        ];
        let leaf = (path, op).prop_map(|(p, o)| json!({ p: o }));
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({ "$and": v })),
                prop::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({ "$or": v })),
                inner.prop_map(|v| json!({ "$not": v })),
            ]
        })
    }

    fn arb_payload() -> impl Strategy<Value = Value> {
        let value = prop_oneof![
            arb_number().prop_map(|(_, v)| v),
            Just(json!("5")),
            Just(json!("m")),
            Just(json!("q")),
            Just(Value::Null),
            Just(json!(true)),
            Just(json!({"x": 1})),
            Just(json!({"x": 1.0})),
            Just(json!([1, 2])),
            Just(json!([1.0, 2])),
        ];
        prop::collection::vec(prop::option::of(value), KEYS.len()).prop_map(|fields| {
            let map = KEYS
                .iter()
                .zip(fields)
                .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v)))
                .collect();
            Value::Object(map)
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_strings(text in ".{0,200}") {
            let _ = Filter::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_json(value in arb_json(), payload in arb_json()) {
            if let Ok(filter) = Filter::from_value(&value) {
                let _ = filter.matches(&payload);
                let _ = filter.matches_bytes(payload.to_string().as_bytes());
            }
            let _ = Filter::parse(&value.to_string());
        }

        #[test]
        fn numeric_operators_agree_with_model(
            payload in arb_flat_payload(),
            clauses in prop::collection::vec(
                (prop::sample::select(KEYS.to_vec()), 0usize..3, arb_number()),
                1..4,
            ),
        ) {
            let mut parts = Vec::new();
            let mut built = Vec::new();
            let mut expected = true;
            for (key, op, (x, operand)) in clauses {
                let name = ["$gt", "$lt", "$eq"][op];
                parts.push(json!({ key: { name: operand.clone() } }));
                built.push(match op {
                    0 => Filter::gt(key, operand),
                    1 => Filter::lt(key, operand),
                    _ => Filter::eq(key, operand),
                });
                let holds = match payload.get(key).and_then(Value::as_f64) {
                    Some(field) => match op {
                        0 => field > x,
                        1 => field < x,
                        _ => field == x,
                    },
                    None => false,
                };
                expected &= holds;
            }
            let parsed = Filter::from_value(&json!({ "$and": parts })).expect("valid filter");
            prop_assert_eq!(parsed.matches(&payload), expected);
            prop_assert_eq!(Filter::and(built).matches(&payload), expected);
        }

        #[test]
        fn not_negates(filter in arb_filter_json(), payload in arb_payload()) {
            let f = Filter::from_value(&filter).expect("generated filters are valid");
            let verdict = f.matches(&payload);
            prop_assert_eq!(Filter::not(f.clone()).matches(&payload), !verdict);
            prop_assert_eq!((!f.clone()).matches(&payload), !verdict);
            let parsed = Filter::from_value(&json!({ "$not": filter })).expect("valid");
            prop_assert_eq!(parsed.matches(&payload), !verdict);
            prop_assert_eq!(parsed, Filter::not(f));
        }
    }
}
